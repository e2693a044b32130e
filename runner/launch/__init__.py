"""A run from spec to hand-over: preflight, open the record, stage, prepare, plan, hand over, follow; sweeps."""
