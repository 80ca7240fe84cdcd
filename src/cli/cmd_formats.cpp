// `mx8 formats`: every element and scale format with its numbers, and what one value costs in memory
// once the scales are counted, per granularity.
#include <cmath>
#include <cstdio>
#include <string>

#include "cli/command.h"
#include "mx8/format/element.h"
#include "mx8/format/layout.h"
#include "mx8/format/ue8m0.h"

namespace {

using namespace mx8::format;

std::string pow2_or_value(double v) {
  char buf[48];
  int e = 0;
  double m = std::frexp(v, &e);
  if (m == 0.5)
    std::snprintf(buf, sizeof buf, "2^%d", e - 1);
  else
    std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

void print_formats(long cols) {
  std::printf("Element formats (OCP FP8 and MX v1.0; round to nearest even, saturating by default)\n\n");
  std::printf("%-6s %-7s %4s %4s %9s %11s %13s %15s %8s  %s\n", "format", "MX", "bits", "bias", "max",
              "min normal", "min subnormal", "range (binades)", "emax", "specials");
  for (ElementFormat f : kAllElementFormats) {
    ElementTraits t = element_traits(f);
    const char* specials = f == ElementFormat::e4m3   ? "NaN 0x7F/0xFF, no Inf"
                           : f == ElementFormat::e5m2 ? "Inf 0x7C/0xFC, NaN 0x7D-7F/0xFD-FF"
                           : f == ElementFormat::int8 ? "none; value = code/64, +-127"
                                                      : "none";
    double range = std::log2(double(t.max_normal) / double(t.min_subnormal));
    std::printf("%-6s %-7s %4d %4d %9.9g %11s %13s %15.2f %8d  %s\n", t.name, t.mx_name, t.bits, t.bias,
                double(t.max_normal), pow2_or_value(t.min_normal).c_str(),
                pow2_or_value(t.min_subnormal).c_str(), range, t.emax, specials);
  }
  std::printf("%-6s %-7s %4d %4d %9s %11s %13s %15.2f %8s  %s\n", "ue8m0", "scale", 8, 127, "2^127", "2^-127",
              "-", 254.0, "-", "0xFF = NaN; no zero, no sign");

  std::printf(
      "\nBytes per value including scales (%ld columns per row for per-row scales; UE8M0 scales "
      "are 1 byte, f32 scales 4)\n\n",
      cols);
  const Blocking blockings[] = {Blocking::per_tensor(), Blocking::per_row(),  Blocking::tile(128),
                                Blocking::tile(32),     Blocking::block(128), Blocking::block(32)};
  std::printf("%-6s %-6s", "format", "scale");
  for (const Blocking& b : blockings) std::printf(" %9s", blocking_name(b).c_str());
  std::printf("  %s\n", "saved at 1x128 vs bf16, vs f32");
  for (ElementFormat f : kAllElementFormats)
    for (int scale_bytes : {1, 4}) {
      double elem = element_traits(f).bits / 8.0;
      std::printf("%-6s %-6s", element_traits(f).name, scale_bytes == 1 ? "ue8m0" : "f32");
      double tile128 = 0;
      for (const Blocking& b : blockings) {
        double per_block = b.kind == Granularity::per_tensor ? 0.0  // one scale for the whole tensor
                           : b.kind == Granularity::per_row  ? 1.0 / double(cols)
                                                             : 1.0 / double(b.block_rows * b.block_cols);
        double bpv = elem + scale_bytes * per_block;
        if (b.kind == Granularity::tile && b.block_cols == 128) tile128 = bpv;
        std::printf(" %9.5f", bpv);
      }
      std::printf("  %5.1f%%, %5.1f%%\n", 100.0 * (1.0 - tile128 / 2.0), 100.0 * (1.0 - tile128 / 4.0));
    }
  std::printf(
      "\nElement bytes are the format's own (FP6 = 0.75: four values in three bytes). mx8's reference "
      "codes store FP6 one per byte\nand E2M1 two per byte. Reference: bf16/f16 2 bytes, f32 4 bytes "
      "per value.\n");
}

mx8::cli::CommandRegistration reg{
    "formats", "Table of every element and scale format, with bytes per value", [](CLI::App& app) {
      auto cols = std::make_shared<long>(4096);
      app.add_option("--cols", *cols, "Row length assumed for per-row scale overhead")
          ->check(CLI::Range(1L, 1L << 30));
      return [cols] { print_formats(*cols); };
    }};

}  // namespace
