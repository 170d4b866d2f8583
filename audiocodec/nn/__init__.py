"""Neural network building blocks shared by the codecs."""
from .conv import PaddedConv1d, PaddedConvTranspose1d, build_conv1d, build_conv_transpose1d, fold_weight_norm
from .dac import DACDecoder, DACEncoder, Snake1d
from .seanet import SEANetDecoder, SEANetEncoder, SEANetResnetBlock, SLSTM
from .vocos import AdaLayerNorm, AttnBlock, ConvNeXtBlock, ISTFT, ISTFTHead, ResBlock, VocosBackbone, VocosDecoder

__all__ = ["PaddedConv1d", "PaddedConvTranspose1d", "build_conv1d", "build_conv_transpose1d", "fold_weight_norm",
           "SEANetDecoder", "SEANetEncoder", "SEANetResnetBlock", "SLSTM", "AdaLayerNorm", "AttnBlock",
           "ConvNeXtBlock", "ISTFT", "ISTFTHead", "ResBlock", "VocosBackbone", "VocosDecoder",
           "DACEncoder", "DACDecoder", "Snake1d"]
