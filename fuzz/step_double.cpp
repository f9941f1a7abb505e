// fuzz/step_double.cpp: the half of fuzz/step.cpp's harness that steps in
// double (see the comment above polar_fuzz_step::choose there).
#define POLAR_FUZZ_STEP_DOUBLE 1
#include "step.cpp"
