"""How a recommend job runs: :mod:`.local` (in this process) or :mod:`.ray` (Ray Data actors).

Each engine's ``run(m, job)`` takes a loaded model and a checked :class:`pipelines.steps.RecommendJob`,
runs the steps of :mod:`pipelines.steps` and writes the same rows; only where the work runs differs.
"""

ENGINES = ("local", "ray")
