#include "suite_table.hpp"

#include "report.hpp"

namespace splat::cli {

void print_suite_table(FILE* to, const std::vector<CaseResult>& results) {
  bool checked = false;
  for (const auto& r : results) checked = checked || r.checked;
  std::vector<std::string> header = {"pattern", "N",   "nnz",   "density", "segs",   "regions",
                                     "ACSR",    "CSR", "waste", "ms",      "GFLOP/s"};
  if (checked) header.insert(header.end(), {"max rel err", "check"});
  Table t(header);
  for (const auto& r : results) {
    std::vector<std::string> row = {r.pattern,
                                    std::to_string(r.n),
                                    std::to_string(r.nnz),
                                    fmt("%.2f%%", 100.0 * r.density),
                                    std::to_string(r.segments),
                                    std::to_string(r.regions),
                                    human_bytes(double(r.acsr_bytes)),
                                    human_bytes(double(r.csr_bytes)),
                                    fmt("%.3f", r.waste),
                                    fmt(r.ms < 1 ? "%.4f" : "%.2f", r.ms),
                                    fmt("%.1f", r.gflops)};
    if (checked) {
      row.push_back(r.checked ? fmt("%.2e", r.max_rel_err) : "-");
      row.push_back(r.checked ? (r.ok ? "ok" : "FAILED") : "-");
    }
    t.add(row);
  }
  t.print(to);
}

}  // namespace splat::cli
