"""The review's techniques that need code beyond a model and its params, one module each.

A module holds its technique's params schema, registered for its params.yaml section with
``@register_stage_schema("<stage>")`` (:func:`resnet_review.config.register_stage_schema`, the
way timm registers a model), the functions its notebook calls, and nothing another technique
needs to know. The claims a technique tests are entries of claims.yaml; its notebook shows them
with ``stage.claims_markdown()``.

==============  ======================  =========================================
module          params.yaml section(s)  notebook
==============  ======================  =========================================
distillation    distillation            08_distilled_resnet50
augmentation    augmentation            09_data_augmentation
transfer        transfer                10_transfer_learning
tuning          hparam_tuning           11_hparam_tuning
compression     pruning, quantisation   12_pruning, 13_quantisation
limitations     limitations             16_limitations
synergy         synergy                 17_synergy
==============  ======================  =========================================

The architecture techniques (SE, ResNeXt, FPN, Swish, dropout, wide/deep, HFF-SEnet, M-MFFnet)
need no module here: each is a model of :mod:`resnet_review.models` and variants in its
params.yaml section. Importing this package registers every schema; the package
``resnet_review`` imports it, so params.yaml is validated whole wherever it is loaded.
"""

from . import augmentation, compression, distillation, limitations, synergy, transfer, tuning

__all__ = ["augmentation", "compression", "distillation", "limitations", "synergy", "transfer", "tuning"]
