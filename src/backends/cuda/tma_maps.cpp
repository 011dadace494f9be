#include "backends/cuda/tma_maps.hpp"

#include <cuda.h>
#include <cuda_runtime_api.h>

#include <mutex>
#include <string>

#include "splat/error.hpp"

namespace splat::cuda {

namespace {
using EncodeTiled = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*,
                                 const cuuint64_t*, const cuuint32_t*, const cuuint32_t*, CUtensorMapInterleave,
                                 CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

EncodeTiled encoder() {
  static std::once_flag once;
  static EncodeTiled fn = nullptr;
  static std::string why;
  std::call_once(once, [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
    const cudaError_t rc = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault, &q);
    if (rc != cudaSuccess || q != cudaDriverEntryPointSuccess || !f) {
      cudaGetLastError();
      why = std::string("cuTensorMapEncodeTiled is not available from the driver (") + cudaGetErrorString(rc) + ")";
      return;
    }
    fn = reinterpret_cast<EncodeTiled>(f);
  });
  if (!fn) fail(ErrorCode::Cuda, why);
  return fn;
}

}  // namespace

void encode_kv_maps(const dev::AttnParams& p, DType dtype, int head_dim, int block_n, dev::TmaMap (&maps)[2]) {
  static_assert(sizeof(dev::TmaMap) == sizeof(CUtensorMap) && alignof(dev::TmaMap) == alignof(CUtensorMap),
                "dev::TmaMap mirrors CUtensorMap");
  const EncodeTiled fn = encoder();
  const CUtensorMapDataType type =
      dtype == DType::BF16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16;
  const void* bases[2] = {p.k, p.v};
  const long long sn[2] = {p.k_sn, p.v_sn}, sh[2] = {p.k_sh, p.v_sh}, sb[2] = {p.k_sb, p.v_sb};
  for (int t = 0; t < 2; ++t) {
    // Bytes; a dimension of extent 1 is never stepped over, so its stride only has to be valid (the driver wants
    // multiples of 16, which the launch checks already guarantee for the others).
    // A stride of 0 over heads or batch (an expanded tensor) is a dimension of extent 1: the kernel then loads
    // coordinate 0 there (attention_tma.cuh reads the strides).
    const cuuint64_t es = 2;
    const cuuint64_t heads = sh[t] == 0 ? 1 : cuuint64_t(p.Hkv), batch = sb[t] == 0 ? 1 : cuuint64_t(p.B);
    cuuint64_t strides[3] = {cuuint64_t(sn[t]) * es, cuuint64_t(sh[t]) * es, cuuint64_t(sb[t]) * es};
    if (heads == 1) strides[1] = strides[0] * cuuint64_t(p.N);
    if (batch == 1) strides[2] = strides[1] * heads;
    const cuuint64_t dims[4] = {cuuint64_t(head_dim), cuuint64_t(p.N), heads, batch};
    const cuuint32_t box[4] = {64, cuuint32_t(block_n), 1, 1}, unit[4] = {1, 1, 1, 1};
    const CUresult rc = fn(reinterpret_cast<CUtensorMap*>(&maps[t]), type, 4, const_cast<void*>(bases[t]), dims,
                           strides, box, unit, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                           CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    if (rc != CUDA_SUCCESS)
      fail(ErrorCode::Cuda, std::string("cuTensorMapEncodeTiled refused the layout of ") + (t == 0 ? "k" : "v") +
                                " (error " + std::to_string(int(rc)) + ", strides " + std::to_string(sn[t]) + "/" +
                                std::to_string(sh[t]) + "/" + std::to_string(sb[t]) +
                                " elements); SPLAT_CUDA_TMA=0 plans the cp.async kernels instead");
  }
}

}  // namespace splat::cuda
