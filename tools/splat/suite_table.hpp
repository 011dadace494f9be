// The results table shared by `splat bench` and `splat demo`.
#pragma once
#include <cstdio>
#include <vector>

#include "runner.hpp"

namespace splat::cli {

void print_suite_table(FILE* to, const std::vector<CaseResult>& results);

}  // namespace splat::cli
