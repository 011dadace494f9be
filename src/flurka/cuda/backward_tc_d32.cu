// The tensor-core FLuRKA backward for head dim 32 (one translation unit per D: they compile in parallel).
#include "flurka/cuda/backward_tc_launch.cuh"

namespace splat::fk::tcrun {
template void run<32>(FlurkaMethod, const FlurkaShape&, const FlurkaInputs&, const FlurkaGrads&, cudaStream_t);
}  // namespace splat::fk::tcrun
