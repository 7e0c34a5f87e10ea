"""nat-toolkit: NAT, DiNAT and DiNAT_s for MMDetection, MMSegmentation and Detectron2.

The repository's top-level folders install as subpackages of this one:
``backbones`` -> ``nattk.backbones`` (the torch-only core), ``detection`` ->
``nattk.detection``, ``segmentation`` -> ``nattk.segmentation``, ``mask2former`` ->
``nattk.mask2former`` (the adapters) and ``openmmlab`` -> ``nattk.openmmlab`` (the glue
the two OpenMMLab adapters share). The modules of this folder are the applications:
the logic behind ``tools/`` (checkpoint converters, FLOPs, ONNX export, evaluation
(``test``), the demo, environment report, toy datasets, the quickstart:
``quickstart*.py``) and the pieces they share (inference, pictures, benchmark timing,
console progress bars, output capture).
"""

__version__ = "0.1.0"
