import numpy as np
import pytest
import torch

from clflow.learners import ContinualLearner
from clflow.lingo.targets import random_targets
from clflow.models import TargetHead


def test_target_head_is_invariant_to_feature_scale():
    torch.manual_seed(0)
    head = TargetHead(16, torch.as_tensor(random_targets(5, 8, 0)))
    z = torch.randn(20, 16)
    for c in (0.01, 3.0, 1000.0):
        assert torch.equal(head(z).argmax(1), head(c * z).argmax(1))
        assert torch.allclose(head(z), head(c * z), atol=1e-4)


def test_targets_stay_frozen_while_training():
    T = random_targets(3, 8, 1)
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(64, 4)).astype(np.float32), rng.integers(0, 3, 64)
    learner = ContinualLearner(3, hidden=16, targets=T, seed=0)
    for _ in range(5):
        learner.partial_fit(X, y)
    head = learner.model_[1]
    assert np.allclose(head.targets.numpy(), T) and "targets" not in dict(head.named_parameters())


def test_masked_head_never_predicts_unseen_classes():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 4)).astype(np.float32)
    learner = ContinualLearner(
        5, hidden=16, targets=random_targets(5, 8, 0), mask_unseen=True, seed=0
    )
    learner.partial_fit(X, np.array([0, 2] * 32))
    assert set(learner.predict(rng.normal(size=(200, 4)).astype(np.float32))) <= {0, 2}


def _trained(make_optimizer, steps: int = 30):
    """A small MLP trained for `steps` on fixed data: (its parameters, its optimizer)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    opt = make_optimizer(net.parameters())
    X, y = torch.randn(64, 6), torch.randint(0, 3, (64,))
    for i in range(steps):
        opt.zero_grad()
        rows = slice(16 * (i % 4), 16 * (i % 4 + 1))
        torch.nn.functional.cross_entropy(net(X[rows]), y[rows]).backward()
        opt.step()
    return net, opt


def _saved(obj) -> bytes:
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def test_fused_adam_is_torchs_fused_adam_byte_for_byte():
    """The same updates and the same state_dict bytes as torch.optim.Adam(fused=True), so the
    checkpoints that either writes are identical and load in the other."""
    from clflow.models import FusedAdam

    ours_net, ours = _trained(lambda p: FusedAdam(p, lr=1e-2))
    torch_net, theirs = _trained(lambda p: torch.optim.Adam(list(p), lr=1e-2, fused=True))
    assert _saved(ours_net.state_dict()) == _saved(torch_net.state_dict())
    assert _saved(ours.state_dict()) == _saved(theirs.state_dict())
    # torch's state loaded into ours (a checkpoint of an earlier release) continues identically
    resumed = FusedAdam(torch_net.parameters(), lr=1e-2)
    resumed.load_state_dict(theirs.state_dict())
    for opt, net in ((resumed, torch_net), (ours, ours_net)):
        opt.zero_grad()
        net(torch.ones(2, 6)).sum().backward()
        opt.step()
    assert _saved(ours_net.state_dict()) == _saved(torch_net.state_dict())
    with pytest.raises(ValueError, match="number of parameters"):
        FusedAdam(torch.nn.Linear(2, 2).parameters(), lr=1e-2).load_state_dict(theirs.state_dict())


def test_training_never_imports_torch_dynamo():
    """torch.optim imports torch._dynamo (~1 s a process); a stage that trains does not."""
    import subprocess
    import sys

    code = (
        "import sys; import numpy as np; from clflow.learners import ContinualLearner; "
        "rng = np.random.default_rng(0); X = rng.normal(size=(64, 4)).astype(np.float32); "
        "ContinualLearner(3, hidden=8, seed=0).partial_fit(X, np.arange(64) % 3); "
        "print('torch._dynamo' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "False"


def test_adam_falls_back_to_torch_where_one_kernel_call_cannot_serve():
    from clflow.models import FusedAdam, adam

    assert isinstance(adam(torch.nn.Linear(2, 2).parameters(), lr=1e-3), FusedAdam)
    mixed = [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2).double())]
    assert isinstance(adam(mixed, lr=1e-3), torch.optim.Adam)
