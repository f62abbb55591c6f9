"""RCDM: representation-conditioned diffusion (Bordes et al. 2022; DESIGN section 2.8).

* :mod:`dejavu.rcdm.model`   -- :class:`RCDMConfig`, the conditioned UNet (:class:`RCDM`),
  the noise schedule, checkpoint save/load.
* :mod:`dejavu.rcdm.train`   -- ``train_rcdm(...)``: one RCDM per SSL model, on the public set.
* :mod:`dejavu.rcdm.sample`  -- DDIM sampling with shared noise.
* :mod:`dejavu.rcdm.reconstruct` -- ``reconstruct(...)``: images from background crops,
  under the target model's RCDM and the reference (control) model's RCDM.
* :mod:`dejavu.rcdm.cli`     -- ``dejavu rcdm train|reconstruct``.
"""
