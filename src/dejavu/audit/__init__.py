"""The one-model déjà vu test (``dejavu audit``): one SSL model against a crop classifier.

Kokhlikyan et al. 2024 ("Déjà Vu OSS", facebookresearch/DejaVuOSS) replace the reference
model B of the two-model test by a supervised classifier that predicts the object's class
from the background crop alone, trained on the crops of images other than the audited
ones. What the classifier gets right is correlation; what only the audited model gets
right is déjà vu. See DESIGN 7.3 for the deliberate differences from that code.
"""
