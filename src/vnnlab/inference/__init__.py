"""Approximate inference, one method per file behind one interface (base.InferenceMethod):
map, bbb (Bayes by Backprop), mc_dropout, ensemble, laplace, ivon. Chosen by `inference=`."""
