# The NAT UperNet recipe in mixed precision: fp16 as in the originals (mmcv
# Fp16OptimizerHook, static loss scale 512). Every UperNet config but DiNAT-L's.
_base_ = './upernet_nat_ade20k-512x512_160k.py'

optim_wrapper = dict(type='AmpOptimWrapper', loss_scale=512.)
