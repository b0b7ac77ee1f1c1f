"""Why each surviving mutant of ``tools/mutate.py`` survives, by mutant name.

A reason starting with "equivalent" marks a mutant that no test can catch because
the program behaves the same (it is left out of the score); any other reason
names the behaviour no test checks. Names come from mutmut (``module.function__mutmut_N``,
``xǁClassǁmethod__mutmut_N``) or from ``CPP_MUTANTS``; they change when the function
is edited, and the report then shows the survivor as "NOT YET EXPLAINED".
"""

CPU_ONLY = "not testable on this CPU-only Paddle: differs only when parameters live on a GPU"

SURVIVORS = {
    # outlier rules
    "paddle_kure.outliers.x__defined__mutmut_3": "equivalent: np.asarray without dtype=float64 gives float64 for the "
    "Python floats and float64 arrays every caller passes (int input would also give the same flags)",
    "paddle_kure.outliers.x__defined__mutmut_5": "equivalent: as mutmut_3 (the dtype argument dropped)",
    # selection
    "paddle_kure.selection.x__kept_l2__mutmut_6": "equivalent: every Paddle parameter (dygraph and static) has a "
    "regularizer attribute, so getattr without a default never raises",
    "paddle_kure.selection.x__layer_tensors__mutmut_4": "equivalent: include_sublayers=None is falsy, as False",
    "paddle_kure.selection.x__layer_tensors__mutmut_5": "equivalent: with include_sublayers=True outer layers also claim "
    "their sublayers' parameters, but named_sublayers walks outer to inner, so the owning layer is written last",
    "paddle_kure.selection.x_plan_kure__mutmut_1": "equivalent: min_size 1 instead of 0 leaves out only tensors of 0 "
    "elements, and no parameter has 0 elements",
    "paddle_kure.selection.x_select_tensors__mutmut_1": "equivalent for model tensors: as plan_kure's mutmut_1 (only a "
    "shape with a 0 dimension would differ)",
    "paddle_kure.selection.xǁKurePlanǁattach__mutmut_11": "equivalent: that KurtosisDecay only validates coeff and "
    "target; l2 1.0 and 0.0 are both valid and the object is dropped",
    # ops
    "paddle_kure.ops.x__dtype_name__mutmut_5": "equivalent: str() of a Paddle dtype is 'paddle.<name>', one dot, so "
    "index 1 is index -1",
    # quant_bits (PaddleSlim config built by prepare_qat)
    "paddle_kure.quant.dygraph.x_prepare_qat__mutmut_45": "equivalent: 'moving_average_abs_max' is the only "
    "activation_quantize_type dygraph QAT accepts, and it is PaddleSlim's default when the key is missing",
    "paddle_kure.quant.dygraph.x_prepare_qat__mutmut_46": "equivalent: as prepare_qat mutmut_45",
    "paddle_kure.quant.dygraph.x_prepare_qat__mutmut_49": "equivalent: the QAT layers are the same with either "
    "onnx_format; the export format comes from export_quantized, which passes config.onnx_format to its own "
    "ImperativeQuantAware",
    "paddle_kure.quant.dygraph.x_prepare_qat__mutmut_50": "equivalent: as prepare_qat mutmut_49",
    # losses
    "paddle_kure.losses.xǁKureǁ__init____mutmut_69": "equivalent: Kure reads only kurtoses() of its KurtosisLoss and "
    "reduces them itself with its own reduction, so the KurtosisLoss's reduction is never used",
    "paddle_kure.losses.xǁKureǁ__init____mutmut_97": "equivalent: Kure only take()s the recorded values of its "
    "ActivationKurtosis; that object's reduction is never used",
    "paddle_kure.losses.xǁKureǁ__init____mutmut_98": "equivalent: as mutmut_97, for the ActivationKurtosis's coeff "
    "(Kure applies its own)",
    # robustness (quantizer and scale search)
    "paddle_kure.robustness.x__reduce_axes__mutmut_1": "equivalent: reducing over every axis is what axis=None does",
    "paddle_kure.robustness.x_quantize_array__mutmut_21": "equivalent under numpy 1.26.4 (the pinned one): reshape "
    "takes any negative size as the unknown one",
    "paddle_kure.robustness.x_quantize_array__mutmut_33": "equivalent: the stand-in divisor of a zero scale only "
    "computes values that np.where then replaces by 0",
    "paddle_kure.robustness.x_quantize_array__mutmut_12": "missing test, harmless: a float32 scale array would be "
    "divided in float32 instead of float64 (a difference only at rounding ties in the last bit)",
    "paddle_kure.robustness.x_quantize_array__mutmut_14": "missing test, harmless: as mutmut_12",
    "paddle_kure.robustness.x_mse_scale__mutmut_9": "equivalent: a scalar inf broadcasts like the array of infs",
    "paddle_kure.robustness.x_mse_scale__mutmut_13": "equivalent: as mutmut_9",
    "paddle_kure.robustness.x_mse_scale__mutmut_20": "equivalent: best is rebound by np.where, never written in "
    "place, so sharing memory with base changes nothing",
    "paddle_kure.robustness.x_mse_scale__mutmut_21": "equivalent: as mutmut_20",
    "paddle_kure.robustness.x_mse_scale__mutmut_49": "missing test: which of two grid fractions with bit-identical "
    "squared error is kept (no natural tensor found that ties)",
    "paddle_kure.robustness.x_scale_ratio__mutmut_27": "equivalent: the stand-in divisor of a zero abs-max only "
    "divides a scale that is 0 there too",
    # prune
    "paddle_kure.prune.pruner.x__smallest_pruned__mutmut_6": "equivalent: None stored into a bool array is False",
    "paddle_kure.prune.pruner.x__smallest_pruned__mutmut_12": "equivalent: numpy reads the sort kind "
    "case-insensitively ('STABLE' is 'stable')",
    "paddle_kure.prune.pruner.xǁ_LayerWeightsǁ__init____mutmut_4": "equivalent: include_sublayers=None is falsy, as False",
    "paddle_kure.prune.pruner.xǁ_LayerWeightsǁmultiply__mutmut_2": "equivalent: the device-mask cache only saves a "
    "host-to-device copy; without it the same mask is rebuilt",
    "paddle_kure.prune.pruner.xǁ_LayerWeightsǁmultiply__mutmut_3": "equivalent: as multiply mutmut_2 (cache never hit)",
    "paddle_kure.prune.pruner.xǁ_LayerWeightsǁmultiply__mutmut_6": "equivalent: as multiply mutmut_2 (cache never hit)",
    "paddle_kure.prune.pruner.xǁ_LayerWeightsǁmultiply__mutmut_15": "equivalent: as multiply mutmut_2 (cache dropped)",
    "paddle_kure.prune.pruner.xǁ_LayerWeightsǁmultiply__mutmut_11": CPU_ONLY,
    "paddle_kure.prune.pruner.xǁ_LayerWeightsǁmultiply__mutmut_14": CPU_ONLY,
    "paddle_kure.prune.pruner.x__tensor_place__mutmut_2": CPU_ONLY,
    "paddle_kure.prune.pruner.x__tensor_place__mutmut_4": CPU_ONLY,
    "paddle_kure.prune.pruner.xǁMagnitudePrunerǁ__init____mutmut_40": CPU_ONLY,
    "paddle_kure.prune.pruner.xǁMagnitudePrunerǁ__init____mutmut_3": "equivalent: min_size 1 instead of 0 leaves out "
    "only tensors of 0 elements, and no parameter has 0 elements",
    "paddle_kure.prune.pruner.xǁ_ProgramWeightsǁ__init____mutmut_12": CPU_ONLY,
    # nn
    'paddle_kure.nn.quantizers.x__channel_abs__mutmut_6': 'equivalent: without keepdim the per-channel [out] vector broadcasts over a 2-D [in, out] weight as [1, out] does (per-channel needs 2-D)',
    'paddle_kure.nn.quantizers.x__channel_abs__mutmut_9': 'equivalent: as _channel_abs mutmut_6',
    'paddle_kure.nn.quantizers.x__channel_abs__mutmut_11': 'equivalent: as _channel_abs mutmut_6',
    'paddle_kure.nn.quantizers.xǁWeightFakeQuantǁforward__mutmut_18': 'equivalent: with s = max|w| / L every w / s already lies in [-L, L]; the clip never acts',
    'paddle_kure.nn.quantizers.xǁWeightFakeQuantǁforward__mutmut_19': 'equivalent: as WeightFakeQuant.forward mutmut_18',
    'paddle_kure.nn.quantizers.xǁWeightFakeQuantǁforward__mutmut_22': 'equivalent: as WeightFakeQuant.forward mutmut_18',
    'paddle_kure.nn.quantizers.xǁWeightFakeQuantǁstorage_bits__mutmut_4': 'equivalent for the 2-D Linear weights it serves: shape[1] is shape[-1]',
    'paddle_kure.nn.quantizers.xǁIRNetBinarizerǁstorage_bits__mutmut_4': 'equivalent for 2-D weights (the only ones IRNetBinarizer accepts): shape[1] is shape[-1]',
    'paddle_kure.nn.quantizers.xǁActivationFakeQuantǁforward__mutmut_21': 'equivalent: assigning a ones tensor of shape [] or [1] to the [1] flag is the same',
    'paddle_kure.nn.quantizers.xǁIRNetBinarizerǁforward__mutmut_6': 'equivalent: the per-channel statistic of a 2-D [in, out] weight broadcasts over the rows with or without keepdim',
    'paddle_kure.nn.quantizers.xǁIRNetBinarizerǁforward__mutmut_8': 'equivalent: the per-channel statistic of a 2-D [in, out] weight broadcasts over the rows with or without keepdim',
    'paddle_kure.nn.quantizers.xǁIRNetBinarizerǁforward__mutmut_10': 'equivalent: the per-channel statistic of a 2-D [in, out] weight broadcasts over the rows with or without keepdim',
    'paddle_kure.nn.quantizers.xǁIRNetBinarizerǁforward__mutmut_16': 'equivalent: the per-channel statistic of a 2-D [in, out] weight broadcasts over the rows with or without keepdim',
    'paddle_kure.nn.quantizers.xǁIRNetBinarizerǁforward__mutmut_18': 'equivalent: the per-channel statistic of a 2-D [in, out] weight broadcasts over the rows with or without keepdim',
    'paddle_kure.nn.quantizers.xǁIRNetBinarizerǁforward__mutmut_21': 'equivalent: the per-channel statistic of a 2-D [in, out] weight broadcasts over the rows with or without keepdim',
    'paddle_kure.nn.quantizers.xǁIRNetBinarizerǁforward__mutmut_26': 'equivalent: the per-channel statistic of a 2-D [in, out] weight broadcasts over the rows with or without keepdim',
    'paddle_kure.nn.quantizers.xǁIRNetBinarizerǁforward__mutmut_28': 'equivalent: the per-channel statistic of a 2-D [in, out] weight broadcasts over the rows with or without keepdim',
    'paddle_kure.nn.quantizers.xǁIRNetBinarizerǁforward__mutmut_30': 'equivalent: the per-channel statistic of a 2-D [in, out] weight broadcasts over the rows with or without keepdim',
    'paddle_kure.nn.pact.xǁPACTǁinit_alpha_from__mutmut_7': 'equivalent: np.asarray reads a paddle Tensor through __array__ as x.numpy() does',
    'paddle_kure.nn.pact.xǁPACTǁinit_alpha_from__mutmut_41': 'equivalent: None is falsy like False, and the flag is only tested for truth',
    # quant config
    'paddle_kure.prune.schedules.xǁSparsityScheduleǁ__init____mutmut_1': "equivalent: every schedule passes its own unit (default 'epoch') to the base class, so the base default is never used",
    'paddle_kure.prune.schedules.xǁSparsityScheduleǁ__init____mutmut_2': 'equivalent: as mutmut_1',
    'paddle_kure.prune.config.xǁPruneConfigǁbuild_pruner__mutmut_9': CPU_ONLY,
    'paddle_kure.prune.config.xǁPruneConfigǁbuild_pruner__mutmut_18': CPU_ONLY,
    'paddle_kure.nn.quantizers.xǁSignBinarizerǁstorage_bits__mutmut_4': 'equivalent for the 2-D Linear weights it serves: shape[1] is shape[-1]',
    'paddle_kure.nn.quantizers.xǁIRNetBinarizerǁ__init____mutmut_17': 'equivalent: at epoch 0 the schedule gives t = t_min and k = 1 / t_min whatever t_max is',
    'paddle_kure.nn.quantizers.xǁIRNetBinarizerǁ__init____mutmut_19': 'equivalent: at epoch 0 the number of epochs does not enter t or k',
    'paddle_kure.nn.pact.xǁPACTǁinit_alpha_from__mutmut_4': 'equivalent for float32 and float64 batches: the max is exact and np.percentile interpolates in float64 either way',
    'paddle_kure.nn.pact.xǁPACTǁinit_alpha_from__mutmut_6': 'equivalent: as mutmut_4',
    'paddle_kure.nn.quantizers.x_quantize_linears__mutmut_8': 'equivalent: that call only validates method and bits (per_channel is checked nowhere) and its result is dropped',
    'paddle_kure.nn.quantizers.x_quantize_linears__mutmut_11': 'equivalent: as mutmut_8',
    "paddle_kure._validate.x_check_int__mutmut_12": "equivalent: an int's low bound is closed; None is falsy like "
                                                    "False, and _interval only tests the flag for truth",
    "paddle_kure._validate.x_check_int__mutmut_24": "equivalent: as mutmut_12 (_outside only tests the flag for truth)",
    "paddle_kure.selection.x__select__mutmut_72": "equivalent: the layer type is only read when layer_types is set, and "
                                                  "layer_types for parameters without a layer is refused before",
    "paddle_kure.selection.x__select__mutmut_82": "equivalent: the kurtoses are Python floats, so np.array gives float64 "
                                                  "without the dtype",
    "paddle_kure.selection.x__select__mutmut_84": "equivalent: as _select mutmut_82",
    "paddle_kure.selection.x__select__mutmut_20": "missing test, harmless: with include, a 0-dimensional parameter "
                                                  "named by a pattern would be left out; models have none",
    "paddle_kure.param_filter.xǁParamFilterǁreason_left_out__mutmut_30": "equivalent on 64-bit Linux: np.prod of a "
                                                                        "shape of Python ints is int64 by default",
    "paddle_kure.param_filter.xǁParamFilterǁreason_left_out__mutmut_32": "equivalent: as reason_left_out mutmut_30",
}
