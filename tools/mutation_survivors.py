"""Why each surviving mutant of ``tools/mutate.py`` survives, by mutant name.

A reason starting with "equivalent" marks a mutant that no test can catch because
the program behaves the same (it is left out of the score); any other reason
names the behaviour no test checks. Names come from mutmut (``module.function__mutmut_N``,
``xǁClassǁmethod__mutmut_N``) or from ``CPP_MUTANTS``; they change when the function
is edited, and the report then shows the survivor as "NOT YET EXPLAINED".
"""

SURVIVORS = {
    # outlier rules
    "paddle_kure.analysis.x__defined__mutmut_3": "equivalent: np.asarray without dtype=float64 gives float64 for the "
    "Python floats and float64 arrays every caller passes (int input would also give the same flags)",
    "paddle_kure.analysis.x__defined__mutmut_5": "equivalent: as mutmut_3 (the dtype argument dropped)",
    # selection
    "paddle_kure.selection.x__kept_l2__mutmut_6": "equivalent: every Paddle parameter (dygraph and static) has a "
    "regularizer attribute, so getattr without a default never raises",
    "paddle_kure.selection.x__layer_tensors__mutmut_4": "equivalent: include_sublayers=None is falsy, as False",
    "paddle_kure.selection.x__layer_tensors__mutmut_5": "equivalent: with include_sublayers=True outer layers also claim "
    "their sublayers' parameters, but named_sublayers walks outer to inner, so the owning layer is written last",
    "paddle_kure.selection.x__select__mutmut_87": "equivalent: np.prod of a shape's Python ints is int64 on 64-bit "
    "Linux with or without dtype",
    "paddle_kure.selection.x__select__mutmut_89": "equivalent: as mutmut_87",
    "paddle_kure.selection.x__select__mutmut_100": "equivalent: the kurtosis values are Python floats, so the array is "
    "float64 anyway (and the outlier rules convert to float64 themselves)",
    "paddle_kure.selection.x__select__mutmut_102": "equivalent: as mutmut_100",
    "paddle_kure.selection.x_plan_kure__mutmut_1": "equivalent: min_size 1 instead of 0 leaves out only tensors of 0 "
    "elements, and no parameter has 0 elements",
    "paddle_kure.selection.x_select_tensors__mutmut_1": "equivalent for model tensors: as plan_kure's mutmut_1 (only a "
    "shape with a 0 dimension would differ)",
    "paddle_kure.selection.xǁKurePlanǁattach__mutmut_11": "equivalent: that KurtosisDecay only validates coeff and "
    "target; l2 1.0 and 0.0 are both valid and the object is dropped",
    # losses
    "paddle_kure.losses.xǁKureǁ__init____mutmut_52": "equivalent: Kure reads only kurtoses() of its KurtosisLoss and "
    "reduces them itself with its own reduction, so the KurtosisLoss's reduction is never used",
    "paddle_kure.losses.xǁKureǁ__init____mutmut_80": "equivalent: Kure only take()s the recorded values of its "
    "ActivationKurtosis; that object's reduction is never used",
    "paddle_kure.losses.xǁKureǁ__init____mutmut_81": "equivalent: as mutmut_80, for the ActivationKurtosis's coeff "
    "(Kure applies its own)",
}
