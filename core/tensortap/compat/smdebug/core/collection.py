"""`smdebug.core.collection`."""
from ..collection import Collection, CollectionKeys  # noqa: F401
