"""The compiled fast executor: a prediction pass, a decision pass and a timing pass (numba) that
reproduce the simulation executor's results exactly for the configurations they cover
(``eligibility``); see docs/engine.md, "The fast executor"."""
