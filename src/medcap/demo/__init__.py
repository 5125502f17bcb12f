"""``medcap demo``: the whole pipeline on built-in synthetic data (:func:`run_demo`).

plan.py: the sizes (FULL, FAST) and what a run returns; machine.py: free cores and a contained
environment; steps.py: each step; run.py: the steps in order.
"""
from .plan import FAST, FULL, DemoModels, DemoPlan, DemoResult
from .run import run_demo

__all__ = ["FAST", "FULL", "DemoModels", "DemoPlan", "DemoResult", "run_demo"]
