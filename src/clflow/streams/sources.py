"""The stream sources `stream.source` names, by kind (the standard library only)."""

SOURCES = (
    "digits",
    "permuted_digits",
    "rotated_digits",
    "mnist1d",
    "permuted_mnist1d",
    "mnist",
    "fashion_mnist",
    "cifar10",
    "parquet",
    "text",
)
DOMAIN_SOURCES = (
    "permuted_digits",
    "rotated_digits",
    "permuted_mnist1d",
)  # every class in every task
# read from stream.path
FILE_SOURCES = ("mnist", "fashion_mnist", "cifar10", "parquet", "text")
# read from where their Debian package installs them when stream.path is "" (clflow.streams.loaders)
PACKAGED_SOURCES = ("fashion_mnist",)
# a stream directory of the user's, its experiences as given
DIRECTORY_SOURCES = ("parquet", "text")
