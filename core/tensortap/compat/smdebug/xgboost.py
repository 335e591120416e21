"""smdebug's XGBoost hook has no counterpart in tensortap: importing this module says so."""
from .exceptions import NoCounterpart

raise NoCounterpart("smdebug.xgboost has no counterpart in tensortap: its frameworks are PyTorch, TensorFlow/Keras "
                    "and MXNet/Gluon (plugins tensortap-torch, tensortap-tensorflow, tensortap-mxnet).")
