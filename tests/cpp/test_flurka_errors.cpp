// Every documented bad input gives one splat::Error(InvalidArgument) with a message that names it.
#include <gtest/gtest.h>

#include <functional>
#include <string>

#include "test_flurka_util.hpp"

using namespace flurka_test;

namespace {

void expect_invalid(const std::function<void()>& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one mentioning '" << needle << "'";
  } catch (const splat::Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument) << e.what();
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

Problem base() {
  return make_problem(Case{1, 2, 10, 12, 8, 4, 6}, 17);
}

TEST(FlurkaErrors, KGreaterThanN) {
  Case c{1, 2, 10, 12, 8, 13, 6};
  Problem p = make_problem(c, 1);
  expect_invalid([&] { flurka_cpu(FlurkaMethod::FlurkaFavor, p.in, p.out_view); }, "k > N");
  expect_invalid([&] { flurka_reference(FlurkaMethod::Linformer, p.in, p.out_view); }, "k > N");
}

TEST(FlurkaErrors, MZero) {
  Problem p = base();
  p.in.w.cols = 0;
  expect_invalid([&] { flurka_cpu(FlurkaMethod::PerformerFavor, p.in, p.out_view); }, "m = 0");
  expect_invalid([&] { flurka_cpu(FlurkaMethod::FlurkaRelu, p.in, p.out_view); }, "m = 0");
}

TEST(FlurkaErrors, WrongShapes) {
  Problem p = base();
  p.in.e.cols = 11;
  expect_invalid([&] { flurka_cpu(FlurkaMethod::FlurkaElu, p.in, p.out_view); }, "E must be");
  p = base();
  p.in.f.rows = 3;
  expect_invalid([&] { flurka_cpu(FlurkaMethod::Linformer, p.in, p.out_view); }, "F must be");
  p = base();
  p.in.w.rows = 7;
  expect_invalid([&] { flurka_cpu(FlurkaMethod::PerformerRelu, p.in, p.out_view); }, "W must be");
  p = base();
  p.in.e.data = nullptr;
  expect_invalid([&] { flurka_cpu(FlurkaMethod::FlurkaFavor, p.in, p.out_view); }, "E: null");
  p = base();
  p.in.v.shape[2] = 11;
  expect_invalid([&] { flurka_cpu(FlurkaMethod::Linear, p.in, p.out_view); }, "same sequence length");
  p = base();
  p.in.k.shape[3] = 4;
  expect_invalid([&] { flurka_cpu(FlurkaMethod::Linear, p.in, p.out_view); }, "head dim");
}

TEST(FlurkaErrors, MismatchedHeads) {
  Problem p = base();
  p.in.e.heads = 3;
  expect_invalid([&] { flurka_cpu(FlurkaMethod::FlurkaFavor, p.in, p.out_view); }, "mismatched heads");
  p = base();
  p.in.w.heads = 5;
  expect_invalid([&] { flurka_cpu(FlurkaMethod::PerformerFavor, p.in, p.out_view); }, "mismatched heads");
  p = base();
  p.in.k.shape[1] = 1;
  expect_invalid([&] { flurka_cpu(FlurkaMethod::Linear, p.in, p.out_view); }, "mismatched heads");
}

TEST(FlurkaErrors, DtypesAndNames) {
  Problem p = base();
  p.in.k.dtype = DType::BF16;
  expect_invalid([&] { flurka_cpu(FlurkaMethod::Linear, p.in, p.out_view); }, "one dtype");
  expect_invalid([] { parse_flurka_method("flurka"); }, "unknown method");
  EXPECT_EQ(parse_flurka_method("performer"), FlurkaMethod::PerformerFavor);
  for (FlurkaMethod m : all_flurka_methods()) EXPECT_EQ(parse_flurka_method(flurka_method_name(m)), m);
}

TEST(FlurkaErrors, UnusedMatricesAreIgnored) {
  Problem p = base();
  p.in.e = p.in.f = MatrixView{};  // performer and linear need no projection
  p.in.w.heads = 9;                // ... and linear needs no W
  EXPECT_NO_THROW(flurka_cpu(FlurkaMethod::Linear, p.in, p.out_view));
}

// Sizes whose products overflow 64 bits (the CLI once aborted on B*H*N*D): one InvalidArgument, no UB.
TEST(FlurkaErrors, SizeOverflowIsInvalidArgument) {
  Problem p = base();
  FlurkaInputs in = p.in;
  const int64_t B = 511, H = 65535, N = 829995071, D = 3982;  // B*H*N*D ~ 1.1e20
  in.q = in.k = in.v = contiguous_view(p.q.data(), DType::F32, B, H, N, D);
  const TensorView out = in.q;
  for (FlurkaMethod m : {FlurkaMethod::Linear, FlurkaMethod::PerformerFavor}) {
    expect_invalid([&] { check_flurka_args(m, in, out); }, "too large");
    expect_invalid([&] { flurka_cpu(m, in, out); }, "too large");
    expect_invalid([&] { flurka_reference(m, in, out); }, "too large");
  }
  // Broadcast views (stride 0) of a huge shape: the element count alone overflows.
  in.q.stride[0] = in.q.stride[1] = in.q.stride[2] = 0;
  in.k = in.v = in.q;
  expect_invalid([&] { flurka_cpu(FlurkaMethod::Linear, in, in.q); }, "too large");
  // Strides whose span overflows although the shape is small.
  in = p.in;
  in.k.stride[0] = int64_t(1) << 62;
  in.k.shape[0] = in.q.shape[0] = in.v.shape[0] = 4;
  in.q.stride[0] = in.v.stride[0] = 0;
  TensorView o4 = in.q;
  expect_invalid([&] { flurka_cpu(FlurkaMethod::Linear, in, o4); }, "too large");
  // W [D, m] with a huge m: W's element count and the B H m D state overflow.
  in = p.in;
  in.w.cols = int64_t(1) << 61;
  expect_invalid([&] { flurka_cpu(FlurkaMethod::PerformerRelu, in, p.out_view); }, "too large");
  // Causal decode state B H max(m, C) D.
  expect_invalid(
      [&] {
        flurka_decode_init(FlurkaMethod::FlurkaElu, int64_t(1) << 40, int64_t(1) << 20, 64, 4,
                           MatrixView{p.e.data(), DType::F32, 1, 2, 4, -1},
                           MatrixView{p.f.data(), DType::F32, 1, 2, 4, -1}, MatrixView{});
      },
      "too large");
  // The CUDA workspace query takes caller-given sizes: an InvalidArgument, or a size that did not wrap around
  // (0 in a build without CUDA kernels; at least the B*H*k float32 projected rows with them).
  FlurkaShape s{B, H, N, N, D, 256, 256};
  try {
    const size_t ws = flurka_cuda_workspace_bytes(FlurkaMethod::FlurkaFavor, s);
#if SPLAT_WITH_CUDA
    EXPECT_GE(ws, size_t(B) * size_t(H) * 256u * 4u);
#else
    EXPECT_EQ(ws, 0u);
#endif
  } catch (const splat::Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument) << e.what();
  }
}

TEST(FlurkaErrors, ThreadCounts) {
  Problem p = base();
  for (int t : {-1, 4097, 65536}) {
    FlurkaOptions o;
    o.threads = t;
    expect_invalid([&] { flurka_cpu(FlurkaMethod::Linear, p.in, p.out_view, o); }, "threads");
  }
}

// float64 inputs are computed in float64 (the reference's values exactly).
TEST(FlurkaErrors, Float64IsComputedInFloat64) {
  Case c{1, 2, 10, 12, 8, 4, 6};
  c.dtype = DType::F64;
  Problem p = make_problem(c, 21);
  Buf ref(DType::F64, p.out.size());
  const TensorView rv = contiguous_view(ref.data(), DType::F64, c.B, c.H, c.Nq, c.D);
  for (FlurkaMethod m : all_flurka_methods()) {
    flurka_reference(m, p.in, rv);
    flurka_cpu(m, p.in, p.out_view);
    EXPECT_EQ(p.out.bytes, ref.bytes) << flurka_method_name(m);
  }
}

TEST(FlurkaErrors, CudaPathSaysWhy) {
  Problem p = base();
  std::string why;
  if (!flurka_cuda_available(&why)) {
    EXPECT_FALSE(why.empty());
    try {
      flurka_cuda(FlurkaMethod::FlurkaFavor, p.in, p.out_view);
      ADD_FAILURE() << "flurka_cuda ran without a device";
    } catch (const splat::Error& e) {
      EXPECT_FALSE(std::string(e.what()).empty());
    }
  } else {
    EXPECT_THROW(flurka_cuda(FlurkaMethod::FlurkaFavor, p.in, p.out_view), splat::Error);  // host views
  }
}

}  // namespace
