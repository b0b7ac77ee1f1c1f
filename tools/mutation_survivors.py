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
}
