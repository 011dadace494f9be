// FLuRKA (fused low-rank + kernel attention) and its parents: Linformer, Performer, linear attention.
// Normative semantics (issue 4; docs/FLURKA.md has the formulas and the causal variant):
//   per (batch, head): Q [Nq, D], K, V [N, D]; E, F [k, N]; W [D, m]; s = D^(-1/4)
//   K' = E K, V' = F V
//   favor: phi(x) = exp(s x W - ||s x||^2 / 2) / sqrt(m);  elu: phi(x) = elu(x) + 1 (m = D);
//   relu:  phi(x) = relu(s x W) / sqrt(m)
//   flurka-*:  out_i = phi(q_i) (phi(K')^T V') / (phi(q_i) . phi(K')^T 1), 0 where the denominator is 0
//   linformer: softmax(Q K'^T / sqrt(D)) V';  performer-* / linear: the kernel formula with K, V.
// Host (CPU) and device (CUDA) entry points take the same views; every bad input throws one splat::Error.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "splat/tensor.hpp"

namespace splat {

enum class FlurkaMethod : uint8_t {
  FlurkaFavor,
  FlurkaElu,
  FlurkaRelu,
  Linformer,
  PerformerFavor,
  PerformerRelu,
  Linear
};
enum class FeatureMap : uint8_t { None, Favor, Elu, Relu };  // None: softmax (linformer)

const char* flurka_method_name(FlurkaMethod m);  // "flurka-favor", ..., "performer-favor", "performer-relu", "linear"
// Accepts the names above and "performer" (= performer-favor). Throws InvalidArgument listing the choices.
FlurkaMethod parse_flurka_method(const std::string& s);
std::vector<FlurkaMethod> all_flurka_methods();
FeatureMap feature_map_of(FlurkaMethod m);
bool uses_projection(FlurkaMethod m);       // E, F needed (flurka-*, linformer)
bool uses_random_features(FlurkaMethod m);  // W needed (favor, relu maps)

// A stack of row-major contiguous matrices [heads, rows, cols]. heads == 1 means shared by all heads.
struct MatrixView {
  const void* data = nullptr;
  DType dtype = DType::F32;
  int64_t heads = 1, rows = 0, cols = 0;
  int device = -1;  // -1: host; >= 0: CUDA device ordinal
  size_t offset(int64_t h) const { return heads == 1 ? 0 : size_t(h) * size_t(rows) * size_t(cols); }
};

struct FlurkaInputs {
  TensorView q, k, v;  // q [B,H,Nq,D]; k, v [B,H,N,D]
  MatrixView e, f;     // [k,N] or [H,k,N]   (projected methods; ignored otherwise)
  MatrixView w;        // [D,m] or [H,D,m]   (favor / relu maps; ignored otherwise)
};

// Resolved sizes of a checked call. m = D for the elu map; k = 0 for unprojected methods.
struct FlurkaShape {
  int64_t B = 0, H = 0, Nq = 0, N = 0, D = 0, k = 0, m = 0;
};
// Validates shapes, dtypes, devices and heads (k > N, m = 0, wrong E/F/W shapes, mismatched heads, ...).
// For causal calls E, F are [r, C] (chunk projections) instead of [k, N], and Nq must equal N.
FlurkaShape check_flurka_args(FlurkaMethod m, const FlurkaInputs& in, const TensorView& out, int64_t causal_chunk = 0);

struct FlurkaOptions {
  int threads = 0;  // CPU: 0 = all hardware threads
};

// float64 reference: the formulas evaluated literally (the oracle).
void flurka_reference(FlurkaMethod m, const FlurkaInputs& in, const TensorView& out);
// Fast CPU path: float32 accumulation, OpenMP over (batch, head, row blocks), vectorised inner loops.
void flurka_cpu(FlurkaMethod m, const FlurkaInputs& in, const TensorView& out, const FlurkaOptions& opt = {});

// ---- Causal variant (flurka-* only; see docs/FLURKA.md) ----
// Tokens are split into chunks of C; chunk c is compressed to r rows K'_c = E K_c, V'_c = F V_c with E, F
// [r, C] ([H, r, C] per head). Query i in chunk c attends to the kernel state of chunks < c plus exact
// softmax over the keys j <= i of its own chunk, in one normaliser:
//   out_i = (phi(q_i) S_c + sum_j e^{q_i.k_j/sqrt(D)} v_j) / (phi(q_i) z_c + sum_j e^{q_i.k_j/sqrt(D)})
//   S_c = sum_{c'<c} phi(K'_c')^T V'_c',  z_c = sum_{c'<c} phi(K'_c')^T 1   (j over i's chunk, j <= i).
// For favor phi(q).phi(k) is an unbiased estimate of e^{q.k/sqrt(D)}, so both parts share one scale.
// The last chunk may be partial: it only ever uses the exact part, so E, F need exactly C columns.
void flurka_causal_reference(FlurkaMethod m, const FlurkaInputs& in, const TensorView& out, int64_t chunk);
void flurka_causal_cpu(FlurkaMethod m, const FlurkaInputs& in, const TensorView& out, int64_t chunk,
                       const FlurkaOptions& opt = {});

// Recurrent decoding: one token per call for B x H sequences. The state holds S, z (m x D and m per head,
// float64) and the current chunk's raw keys/values; a step costs O(m D + C D), a chunk flush O(r C D + r m D).
struct FlurkaDecodeState {
  FlurkaMethod method = FlurkaMethod::FlurkaFavor;
  int64_t B = 0, H = 0, D = 0, m = 0, r = 0, C = 0;
  int64_t pos = 0;              // tokens consumed
  std::vector<double> S, z;     // [B,H,m,D], [B,H,m]
  std::vector<double> ck, cv;   // current chunk keys/values [B,H,C,D]
  std::vector<double> E, F, W;  // copies: [He,r,C], [He,r,C], [Hw,D,m]
  int64_t He = 1, Hw = 1;
};
FlurkaDecodeState flurka_decode_init(FlurkaMethod m, int64_t B, int64_t H, int64_t D, int64_t chunk,
                                     const MatrixView& e, const MatrixView& f, const MatrixView& w);
// q, k, v, out: [B, H, 1, D] host views. Appends (k, v) at position pos and writes the causal output of q.
void flurka_decode_step(FlurkaDecodeState& st, const TensorView& q, const TensorView& k, const TensorView& v,
                        const TensorView& out);

// ---- Backward (training) ----
// Gradients of sum(out * dout) with respect to q, k, v and, for projected methods, E and F. W is a fixed random
// feature matrix: no gradient. out is recomputed (O(B H (k + m) D) state per call, never N x m tensors).
// Every gradient is written, not accumulated: dq like q, dk/dv like k/v (dtype of q or f32, any strides with
// D contiguous); de/df: contiguous like E/F with E's dtype and heads (shared E, F [k, N]: summed over every
// batch and head; per head: over the batch). Stabilisers (the favor offsets, the softmax max) are constants
// of the formula: the gradients are the formula's up to rounding. Deterministic for any thread count.
// float64 inputs are computed in float64 (the reference).
struct FlurkaGrads {
  TensorView dout;        // [B, H, Nq, D], q's dtype
  TensorView dq, dk, dv;  // written
  void* de = nullptr;     // written for projected methods (E's layout and dtype); unused otherwise
  void* df = nullptr;
};
// Checks in (as check_flurka_args) and the gradient views against it.
FlurkaShape check_flurka_backward_args(FlurkaMethod m, const FlurkaInputs& in, const FlurkaGrads& g,
                                       int64_t causal_chunk = 0);
// float64 oracle: the chain rule through the literal formulas.
void flurka_backward_reference(FlurkaMethod m, const FlurkaInputs& in, const FlurkaGrads& g);
// Fast CPU path: float32, OpenMP over (batch, head, row blocks), stabilised like the forward.
void flurka_backward_cpu(FlurkaMethod m, const FlurkaInputs& in, const FlurkaGrads& g, const FlurkaOptions& opt = {});
// Causal chunked variant (flurka-* only; E, F are [r, C] chunk projections).
void flurka_causal_backward_reference(FlurkaMethod m, const FlurkaInputs& in, const FlurkaGrads& g, int64_t chunk);
void flurka_causal_backward_cpu(FlurkaMethod m, const FlurkaInputs& in, const FlurkaGrads& g, int64_t chunk,
                                const FlurkaOptions& opt = {});

// ---- CUDA (built with SPLAT_WITH_CUDA; otherwise these throw Unsupported) ----
// D in {32, 64, 128}, k, m <= 512, E/F/W of q's dtype on q's device. GEMM operands are bf16 on the tensor
// cores with float32 accumulation whatever the storage dtype (f32/f16 storage is converted on load).
bool flurka_cuda_available(std::string* why = nullptr);
bool flurka_cuda_supports(FlurkaMethod m, const FlurkaShape& s, std::string* why = nullptr);
size_t flurka_cuda_workspace_bytes(FlurkaMethod m, const FlurkaShape& s);
// Device views. workspace: at least flurka_cuda_workspace_bytes (nullptr: allocated and freed inside, which
// synchronises). stream: a cudaStream_t (nullptr = default). Launches only; no synchronisation otherwise.
void flurka_cuda(FlurkaMethod m, const FlurkaInputs& in, const TensorView& out, void* workspace = nullptr,
                 void* stream = nullptr);
// Host convenience: copies host inputs to the device, runs warmup + repeats times, copies out back.
// Returns the median time in ms (CUDA events), measured around each whole call.
double flurka_cuda_host(FlurkaMethod m, const FlurkaInputs& in, const TensorView& out, int warmup = 0, int repeats = 1);
// Causal chunked variant on device views: the formula of flurka_causal_reference (flurka-* methods, E, F [r, C]),
// D in {32, 64, 128}, r, m <= 512; deterministic. bf16 storage runs on the tensor cores (bf16 operands, fp32
// accumulation; 1.6-2.2x the non-causal forward's time on the H200); fp32 / fp16 storage (or
// SPLAT_FLURKA_CAUSAL_TC=0) takes fp32 SIMT kernels on the stored values (10-20x the non-causal time).
// workspace: at least flurka_causal_cuda_workspace_bytes (nullptr: allocated and freed inside, which
// synchronises); the host form (tests) NaN-poisons out and the workspace and returns the median ms.
size_t flurka_causal_cuda_workspace_bytes(FlurkaMethod m, const FlurkaShape& s, int64_t chunk);
void flurka_causal_cuda(FlurkaMethod m, const FlurkaInputs& in, const TensorView& out, int64_t chunk,
                        void* workspace = nullptr, void* stream = nullptr);
double flurka_causal_cuda_host(FlurkaMethod m, const FlurkaInputs& in, const TensorView& out, int64_t chunk,
                               int warmup = 0, int repeats = 1);
// Recurrent decode step on the GPU (EXPERIMENTAL: its test passes on the H200; not timed yet): flurka_decode_step's arithmetic in fp32
// for B x H sequences, one block each; D in {32, 64, 128}, r, m <= 512, C <= 4096. The state (S, z, the current
// chunk, the position) lives in one device allocation; E, F, W are the caller's device matrices and must outlive
// it. A step is two launches and no host work, so it can be captured in a CUDA graph (the position advances on the
// device; `pos` counts the host calls only).
struct FlurkaCudaDecodeState {
  FlurkaMethod method = FlurkaMethod::FlurkaFavor;
  int64_t B = 0, H = 0, D = 0, m = 0, r = 0, C = 0;
  int64_t pos = 0;  // steps launched from the host
  DType dtype = DType::BF16;
  MatrixView e, f, w;
  int device = 0;
  void* buf = nullptr;  // device: S, z, offsets, chunk keys / values, flush scratch, position
  bool owns_buf = true;  // false: the caller's buffer (flurka_decode_cuda_attach); free leaves it alone
};
FlurkaCudaDecodeState flurka_decode_cuda_init(FlurkaMethod m, int64_t B, int64_t H, int64_t D, int64_t chunk,
                                              const MatrixView& e, const MatrixView& f, const MatrixView& w,
                                              void* stream = nullptr);
// q, k, v, out: [B, H, 1, D] device views of E's dtype. Launches only (stream-ordered).
void flurka_decode_cuda_step(FlurkaCudaDecodeState& st, const TensorView& q, const TensorView& k, const TensorView& v,
                             const TensorView& out, void* stream = nullptr);
void flurka_decode_cuda_free(FlurkaCudaDecodeState& st);
// A state in a caller-owned device buffer (a framework's allocator; CUDA graphs): its size, a view of it (same
// checks as init, no allocation) and a reset to the empty state (launches only: stream-ordered, capturable).
size_t flurka_decode_cuda_state_bytes(FlurkaMethod m, int64_t B, int64_t H, int64_t D, int64_t chunk,
                                      const MatrixView& e, const MatrixView& f, const MatrixView& w);
FlurkaCudaDecodeState flurka_decode_cuda_attach(FlurkaMethod m, int64_t B, int64_t H, int64_t D, int64_t chunk,
                                                const MatrixView& e, const MatrixView& f, const MatrixView& w,
                                                void* buffer);
void flurka_decode_cuda_reset(FlurkaCudaDecodeState& st, void* stream = nullptr);
// Tests: feeds host [B, H, N, D] q, k, v token by token through the device decode step; out row t = step t.
void flurka_decode_cuda_host(FlurkaMethod m, const FlurkaInputs& in, const TensorView& out, int64_t chunk);
// Backward on device views, non-causal (the causal backward runs on the CPU). bf16 with k, m <= 256 (every method):
// tensor-core kernels (bf16 operands, fp32 accumulation; phi recomputed, never stored N x m); f32, f16 and larger
// k, m: fp32 SIMT kernels; SPLAT_FLURKA_BWD=simt forces those. Deterministic (bitwise, run to run); dout and the
// gradients in q's dtype; its scratch comes from cudaMallocAsync on `stream` (stream-ordered: no synchronisation,
// graph capturable).
void flurka_backward_cuda(FlurkaMethod m, const FlurkaInputs& in, const FlurkaGrads& g, void* stream = nullptr);
// Host convenience (tests): copies host inputs and dout to the device, NaN-poisons the device gradients, runs
// flurka_backward_cuda, synchronises and copies the gradients back into g's host buffers.
void flurka_backward_cuda_host(FlurkaMethod m, const FlurkaInputs& in, const FlurkaGrads& g);

// ---- Cost model ----
struct DeviceCeilings {
  double bandwidth = 4.17e12;   // bytes/s, device copy (read + write), measured on the H200 (see docs)
  double gemm_flops = 7.90e14;  // bf16 dense GEMM FLOP/s (8192^3 through torch), measured on the H200
  double simt_flops = 4.0e13;   // fp32 FMA FLOP/s (elementwise/feature-map work)
  double launch = 4.0e-6;       // seconds per kernel launch
  std::string name = "H200 (measured defaults)";
};
struct FlurkaCost {
  double flops = 0, bytes = 0;   // tensor-core FLOPs and compulsory device-memory bytes
  double floor_s = 0;            // max(bytes / bandwidth, flops / gemm_flops)
  double predicted_s = 0;        // forward: floor plus launch and efficiency terms
  double train_predicted_s = 0;  // forward + backward (0 where no backward was measured: the causal path)
};

// Cost of one call for B x H heads. elem = bytes per stored element; shared_proj: E, F, W shared by heads.
FlurkaCost flurka_cost(FlurkaMethod m, int64_t B, int64_t H, int64_t N, int64_t D, int64_t k, int64_t mfeat, int elem,
                       bool shared_proj, const DeviceCeilings& dev = {});
// The causal chunked CUDA forward (chunk C compressed to r rows; the c1 kernels, fp32 SIMT): flurka-favor,
// flurka-elu, flurka-relu only (the methods it exists for; others are an Error).
FlurkaCost flurka_causal_cost(FlurkaMethod m, int64_t B, int64_t H, int64_t N, int64_t D, int64_t C, int64_t r,
                              int64_t mfeat, int elem, const DeviceCeilings& dev = {});
// cuDNN's dense SDPA (non-causal), fitted per head dim.
FlurkaCost dense_attention_cost(int64_t B, int64_t H, int64_t N, int64_t D, int elem, const DeviceCeilings& dev = {});

}  // namespace splat
