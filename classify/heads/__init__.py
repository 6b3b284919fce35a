"""The heads: scikit-learn estimators over codes (linear, torch_heads, network_top, ensemble) and
the solvers under the linear ones (sweep, lbfgs); scaling is the step before each."""
