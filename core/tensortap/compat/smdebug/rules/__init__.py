"""smdebug's rules API: `from tensortap.compat.smdebug.rules import Rule, invoke_rule`
(also `.rules.rule.Rule`, `.rules.rule_invoker.invoke_rule`, `.rules.req_tensors.RequiredTensors`)."""
from .req_tensors import RequiredTensors, RequiredTensorsForTrial
from .rule import Rule
from .rule_invoker import invoke_rule
from .tensortap_rule import SmdebugRule

__all__ = ["Rule", "invoke_rule", "RequiredTensors", "RequiredTensorsForTrial", "SmdebugRule"]
