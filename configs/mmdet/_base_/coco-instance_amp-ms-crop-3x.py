# The 3x COCO recipe in mixed precision: fp16 as in the originals (mmcv Fp16OptimizerHook,
# static loss scale 512). Every NAT / DiNAT / DiNAT_s detection config but DiNAT-L's.
_base_ = './coco-instance_ms-crop-3x.py'

optim_wrapper = dict(type='AmpOptimWrapper', loss_scale=512.)
