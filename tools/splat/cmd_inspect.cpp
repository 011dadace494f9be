// splat inspect PATTERN --seq-len N [--json] [--png FILE]: what the analysis found and what it costs.
#include <cstdio>

#include "args.hpp"
#include "commands.hpp"
#include "report.hpp"
#include "runner.hpp"
#include "splat/acsr.hpp"
#include "splat/error.hpp"
#include "splat/npy.hpp"
#include "splat/png.hpp"

namespace splat::cli {
namespace {

constexpr const char* kUsage =
    "usage: splat inspect PATTERN --seq-len N [--json] [--png FILE]\n"
    "  Analyses PATTERN at sequence length N: nnz, density, ACSR segments and regions, ACSR vs CSR\n"
    "  metadata bytes, the plan's tiles and waste (computed / useful entries).\n"
    "  --json       one JSON object (keys nnz, density, acsr_bytes, csr_bytes, waste, segments, regions, tiles, ...)\n"
    "  --png FILE   draw the mask (downsampled to <= 1024 px; a pixel is drawn if any entry of its cell is\n"
    "               attended, shaded by the fraction; axes with query (i, left) and key (j, top) indices;\n"
    "               rows coloured by region, a bar on the left marks them, the legend lists their rows)\n"
    "  --zoom i0:i1,j0:j1  draw only rows [i0, i1) x keys [j0, j1), magnified up to 8 px per entry when\n"
    "               small: periodic structure finer than a downsampled pixel (dilations, strides) shows\n"
    "  N >= 1: an empty pattern (N = 0) has nothing to analyse and is refused (exit 2).\n";

constexpr size_t kMaxRegionsListed = 64;

int inspect(const std::vector<std::string>& argv) {
  Args args("inspect", argv, {{"seq-len", true}, {"json", false}, {"png", true}, {"zoom", true}}, 1);
  if (args.help()) return std::fputs(kUsage, stdout), 0;
  const std::string& spec = args.require_positional("PATTERN");
  const int64_t n = args.require_int("seq-len", 1, (int64_t(1) << 31) - 1);
  if (args.has("png")) check_output_target(args.get("png"));
  require(args.has("png") || !args.has("zoom"), "splat inspect: --zoom needs --png FILE");
  const MaskWindow window = args.has("zoom") ? parse_mask_window(args.get("zoom"), n) : MaskWindow{};
  const Analysis a = analyse_spec(spec, n);
  const Acsr& acsr = a.plan.acsr;
  const std::vector<Region> regs = regions(acsr);
  const double density = double(a.nnz) / (double(n) * double(n));
  const int64_t ab = acsr_bytes(acsr), cb = csr_bytes(n, a.nnz);
  const int64_t blocks = int64_t(acsr.blocks.col_block.size()), columns = int64_t(acsr.columns.cols.size());
  MaskPicture pic;
  if (args.has("png")) pic = write_mask_png(args.get("png"), acsr, 1024, window);

  if (args.has("json")) {
    std::string j = "{";
    j += "\"pattern\": " + json_string(a.canonical) + ", \"seq_len\": " + std::to_string(n);
    j += ", \"nnz\": " + std::to_string(a.nnz) + ", \"density\": " + json_number(density);
    j += ", \"segments\": " + std::to_string(acsr.segments.size()) +
         ", \"remainder_blocks\": " + std::to_string(blocks) + ", \"remainder_columns\": " + std::to_string(columns);
    j += ", \"regions\": " + std::to_string(regs.size()) + ", \"region_list\": [";
    for (size_t r = 0; r < regs.size() && r < kMaxRegionsListed; ++r)
      j += std::string(r ? ", " : "") + "{\"row_begin\": " + std::to_string(regs[r].row_begin) +
           ", \"row_end\": " + std::to_string(regs[r].row_end) +
           ", \"segments\": " + std::to_string(regs[r].segments.size()) +
           ", \"residue_stride\": " + std::to_string(regs[r].residue_stride) +
           ", \"describe\": " + json_string(regs[r].describe) + "}";
    j += "], \"acsr_bytes\": " + std::to_string(ab) + ", \"csr_bytes\": " + std::to_string(cb);
    j +=
        ", \"tiles\": " + std::to_string(a.plan.tile_count()) + ", \"passes\": " + std::to_string(a.plan.passes.size());
    j += ", \"computed\": " + std::to_string(a.plan.computed) + ", \"waste\": " + json_number(a.plan.waste());
    j += ", \"analyse_ms\": " + json_number(a.analyse_ms) + ", \"plan_ms\": " + json_number(a.plan_ms) + "}";
    std::printf("%s\n", j.c_str());
    return 0;
  }

  std::printf("pattern     %s\n", a.canonical.c_str());
  std::printf("seq-len     %lld\n", (long long)n);
  std::printf("nnz         %lld (density %.4f%%)\n", (long long)a.nnz, 100.0 * density);
  std::printf("segments    %zu affine; remainder: %lld blocks, %lld columns\n", acsr.segments.size(), (long long)blocks,
              (long long)columns);
  std::printf("regions     %zu\n", regs.size());
  for (size_t r = 0; r < regs.size() && r < kMaxRegionsListed; ++r)
    std::printf("  rows [%lld, %lld)  %zu segment(s)  %s\n", (long long)regs[r].row_begin, (long long)regs[r].row_end,
                regs[r].segments.size(), regs[r].describe.c_str());
  if (regs.size() > kMaxRegionsListed) std::printf("  ... %zu more\n", regs.size() - kMaxRegionsListed);
  std::printf("metadata    ACSR %s vs CSR %s (%.1fx smaller)\n", human_bytes(double(ab)).c_str(),
              human_bytes(double(cb)).c_str(), ab ? double(cb) / double(ab) : 0.0);
  std::printf("plan        %lld tiles in %zu pass(es)", (long long)a.plan.tile_count(), a.plan.passes.size());
  for (const auto& p : a.plan.passes) std::printf("; %s", p.describe.c_str());
  std::printf("\nwaste       %.3f (computed %lld / useful %lld)\n", a.plan.waste(), (long long)a.plan.computed,
              (long long)a.plan.useful);
  std::printf("time        analysis %.3f ms, plan %.3f ms\n", a.analyse_ms, a.plan_ms);
  if (args.has("png")) {
    std::printf("picture     %s (", args.get("png").c_str());
    if (pic.cell > 1)
      std::printf("%lld x %lld entries per pixel; --zoom i0:i1,j0:j1 shows a part in full detail)\n",
                  (long long)pic.cell, (long long)pic.cell);
    else
      std::printf("%d px per entry)\n", pic.zoom);
  }
  return 0;
}

CommandRegistrar reg({"inspect", "analyse a pattern: nnz, density, segments, regions, ACSR vs CSR bytes, tiles, waste",
                      inspect});

}  // namespace
}  // namespace splat::cli
