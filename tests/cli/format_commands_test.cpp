// The format tools of the command line: `mx8 cast` (one value through a format and back), `mx8 formats`
// (the table of formats and bytes per value) and `mx8 quant-error` (the error of quantizing a tensor).
// The library code under them has its own tests; these hold what the commands add: parsing, the lines
// they print, the choice of scale rule, standard input, and the errors. Expected values come from
// numerics.md's tables of what cuda_fp8.hpp's host conversions return (a reference nobody on the team
// wrote) or are worked by hand in the comments.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "cli/run_mx8.h"
#include "mx8/io/safetensors_writer.h"

namespace {

using mx8::test::mx8_command;
using mx8::test::mx8_exe;
using mx8::test::run;
using mx8::test::run_shell;

class FormatCommands : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(mx8_exe())) GTEST_SKIP() << mx8_exe() << " not built";
  }
  // Standard output alone (standard error to /dev/null), and the exit status.
  static std::string stdout_of(const std::string& args, int* status) {
    return mx8::test::run_stdout(args, status);
  }
  static std::string ok(const std::string& args) {
    int st = 0;
    const std::string out = stdout_of(args, &st);
    EXPECT_EQ(st, 0) << args << "\n" << out;
    return out;
  }
  // `mx8 args` fails with exit status `status` (1: a value refused, 2: a command line that does not
  // parse), says `what`, and prints nothing on standard output.
  static void expect_error(const std::string& args, const std::string& what, int status = 1) {
    int st = 0;
    const std::string both = run(args, &st);
    EXPECT_EQ(st, status) << args << "\n" << both;
    EXPECT_NE(both.find(what), std::string::npos) << args << "\n" << both;
    EXPECT_EQ(stdout_of(args, &st), "") << args;
  }
  std::filesystem::path temp(const std::string& name) {
    const auto p =
        std::filesystem::temp_directory_path() / ("mx8_fmtcli_" + std::to_string(::getpid()) + "_" + name);
    made_.push_back(p);
    return p;
  }
  static void write_f32(const std::filesystem::path& p, const std::vector<float>& v) {
    std::ofstream(p, std::ios::binary)
        .write(reinterpret_cast<const char*>(v.data()), std::streamsize(v.size() * sizeof(float)));
  }
  void TearDown() override {
    for (const auto& p : made_) std::filesystem::remove(p);
  }

 private:
  std::vector<std::filesystem::path> made_;
};

// numerics.md 1.3: E4M3 and E5M2 under __NV_SATFINITE (default) and __NV_NOSAT (--no-sat). Each line is
// the input's f32 bits, the code and the decoded value.
TEST_F(FormatCommands, CastEncodesFp8AsCudaFp8HppDoes) {
  // 464 is the tie between 448 and 480 (448's mantissa is even); one ulp above it is past max + half an
  // ulp; Inf saturates; NaN of either sign is 0x7F; 2^-10 ties to zero and 1.5 x 2^-10 rounds to 2^-9.
  EXPECT_EQ(ok("cast --to e4m3 464 0x43E80001 inf -inf -nan 0x3A800000 0x3AC00000 -3 -0"),
            "0x43E80000 0x7E 448\n"
            "0x43E80001 0x7E 448\n"
            "0x7F800000 0x7E 448\n"
            "0xFF800000 0xFE -448\n"
            "0xFFC00000 0x7F nan\n"
            "0x3A800000 0x00 0\n"
            "0x3AC00000 0x01 0.001953125\n"
            "0xC0400000 0xC4 -3\n"
            "0x80000000 0x80 -0\n");
  EXPECT_EQ(ok("cast --to e4m3 --no-sat 464 0x43E80001 inf 480"),
            "0x43E80000 0x7E 448\n"
            "0x43E80001 0x7F nan\n"
            "0x7F800000 0x7F nan\n"
            "0x43F00000 0x7F nan\n");
  // E5M2: 61440 is the tie above 57344 and rounds to even, Inf without saturation; one ulp below stays.
  EXPECT_EQ(ok("cast --to e5m2 --no-sat 61440 0x476FFFFF -inf 1.5"),
            "0x47700000 0x7C inf\n"
            "0x476FFFFF 0x7B 57344\n"
            "0xFF800000 0xFC -inf\n"
            "0x3FC00000 0x3E 1.5\n");
  EXPECT_EQ(ok("cast --to e5m2 61440 inf"), "0x47700000 0x7B 57344\n0x7F800000 0x7B 57344\n");
}

// numerics.md 2.2: UE8M0 from |x|, rounded up (RP, the default `ceil` rule) or down (RZ, `floor`),
// saturating at 2^127 unless --no-sat; NaN is 0xFF either way; below 2^-127 clips to 2^-127 (0x00).
TEST_F(FormatCommands, CastEncodesUe8m0UnderEitherRule) {
  const std::string values = "0x00400000 0x00400001 0x3F7FFFFF 1.5 -3 448 0x7F000001 inf nan 0";
  EXPECT_EQ(ok("cast --to ue8m0 " + values),
            "0x00400000 0x00 5.87747175e-39\n"
            "0x00400001 0x01 1.17549435e-38\n"
            "0x3F7FFFFF 0x7F 1\n"
            "0x3FC00000 0x80 2\n"
            "0xC0400000 0x81 4\n"
            "0x43E00000 0x88 512\n"
            "0x7F000001 0xFE 1.70141183e+38\n"
            "0x7F800000 0xFE 1.70141183e+38\n"
            "0x7FC00000 0xFF nan\n"
            "0x00000000 0x00 5.87747175e-39\n");
  EXPECT_EQ(ok("cast --to ue8m0 --rule floor " + values),
            "0x00400000 0x00 5.87747175e-39\n"
            "0x00400001 0x00 5.87747175e-39\n"
            "0x3F7FFFFF 0x7E 0.5\n"
            "0x3FC00000 0x7F 1\n"
            "0xC0400000 0x80 2\n"
            "0x43E00000 0x87 256\n"
            "0x7F000001 0xFE 1.70141183e+38\n"
            "0x7F800000 0xFE 1.70141183e+38\n"
            "0x7FC00000 0xFF nan\n"
            "0x00000000 0x00 5.87747175e-39\n");
  EXPECT_EQ(ok("cast --to ue8m0 --rule ceil --no-sat 0x7F000000 0x7F000001 -inf"),
            "0x7F000000 0xFE 1.70141183e+38\n0x7F000001 0xFF nan\n0xFF800000 0xFF nan\n");
  EXPECT_EQ(ok("cast --to ue8m0 --rule floor --no-sat inf"), "0x7F800000 0xFF nan\n");
}

// OCP MX v1.0's small formats, ties to even worked by hand. E2M1 (bias 1): 5 lies between 4 (0x6,
// mantissa 0) and 6 (0x7) and goes to 4; 2.5 to 2 (0x4); 0.25 between 0 and 0.5 (0x1, odd) to 0; -0.75
// between -0.5 (odd) and -1 (0xA) to -1; past 6 saturates always (no Inf or NaN). INT8 is code / 64:
// 1/128 ties to 0, 1.5/64 to 2/64; 2 saturates to 127/64. E3M2 (bias 3) saturates at 28 and its
// smallest subnormal is 2^-4; E2M3 (bias 1) at 7.5, with 1/16 the tie between 0 and 2^-3.
TEST_F(FormatCommands, CastRoundsTheMxFormatsToEven) {
  EXPECT_EQ(ok("cast --to e2m1 5 2.5 0.25 0.26 -0.75 7 --no-sat"),
            "0x40A00000 0x06 4\n"
            "0x40200000 0x04 2\n"
            "0x3E800000 0x00 0\n"
            "0x3E851EB8 0x01 0.5\n"
            "0xBF400000 0x0A -1\n"
            "0x40E00000 0x07 6\n");
  EXPECT_EQ(ok("cast --to int8 0.0078125 0.0234375 2 -2"),
            "0x3C000000 0x00 0\n"
            "0x3CC00000 0x02 0.03125\n"
            "0x40000000 0x7F 1.984375\n"
            "0xC0000000 0x81 -1.984375\n");
  EXPECT_EQ(ok("cast --to e3m2 30 0.0625 0.03125"),
            "0x41F00000 0x1F 28\n0x3D800000 0x01 0.0625\n0x3D000000 0x00 0\n");
  EXPECT_EQ(ok("cast --to e2m3 8 0.0625 0.0625001"),
            "0x41000000 0x1F 7.5\n0x3D800000 0x00 0\n0x3D80000D 0x01 0.125\n");
}

// Decimal spellings strtof rounds (1e400 overflows to Inf, 1e-50 to 0), hex bit patterns of 1..8
// digits in either case, blanks around a standard input line.
TEST_F(FormatCommands, CastReadsEverySpellingItDocuments) {
  EXPECT_EQ(ok("cast --to e4m3 1e400 1e-50 0x1 0X3f800000 +1.5 -INFINITY +NaN 2.5e-3"),
            "0x7F800000 0x7E 448\n"
            "0x00000000 0x00 0\n"
            "0x00000001 0x00 0\n"
            "0x3F800000 0x38 1\n"
            "0x3FC00000 0x3C 1.5\n"
            "0xFF800000 0xFE -448\n"
            "0x7FC00000 0x7F nan\n"
            "0x3B23D70A 0x01 0.001953125\n");
  int st = 0;
  const std::string out =
      run_shell("printf '1\\n\\n  2  \\r\\n\\t\\n-0.5\\n' | " + mx8_command() + " cast --to e4m3", &st);
  EXPECT_EQ(st, 0) << out;
  EXPECT_EQ(out, "0x3F800000 0x38 1\n0x40000000 0x40 2\n0xBF000000 0xB0 -0.5\n");
}

TEST_F(FormatCommands, CastRefusesWhatItCannotRead) {
  const std::string what = "as a number (decimal, inf, nan or 0x + f32 bits)";
  for (const char* bad :
       {"0x", "0x123456789", "0xg1", "1.5x", "0x1p3", "1,5", "e5", "-", "infinite", "nan1", "-0x1"})
    expect_error(std::string("cast --to e4m3 1 ") + bad, std::string("cannot read '") + bad + "' " + what);
  expect_error("cast --to e4m3 1 2 three", "cannot read 'three'");  // nothing printed for the first two
  expect_error("cast --to fp8 1", "cast: unknown format 'fp8' (e4m3, e5m2, e3m2, e2m3, e2m1, int8, ue8m0)");
  expect_error("cast --to e4m3 --rule ceil 1", "--rule applies only to --to ue8m0");
  expect_error("cast --to ue8m0 --rule nearest 1", "--rule must be ceil or floor for ue8m0, got 'nearest'");
  expect_error("cast 1", "--to is required", 2);
  // From standard input the lines before the bad one are already out; the error names the line.
  int st = 0;
  const std::string out =
      run_shell("printf '1\\n\\n2\\nfoo\\n3\\n' | " + mx8_command() + " cast --to e4m3 2>&1", &st);
  EXPECT_EQ(st, 1) << out;
  EXPECT_EQ(
      out,
      "0x3F800000 0x38 1\n0x40000000 0x40 2\n"
      "mx8: error: cast: cannot read 'foo' as a number (decimal, inf, nan or 0x + f32 bits) on standard "
      "input line 4\n");
}

// The table's numbers for each format (OCP: E4M3 448 .. 2^-9, E5M2 57344 .. 2^-16, ...; range =
// log2(max / min subnormal)) and bytes per value: 1 byte of code plus a scale's bytes over its block,
// e.g. E4M3 with UE8M0 per 1x128 = 1 + 1/128 = 1.0078125, which saves 1 - 1.0078125 / 2 = 49.6% of
// BF16 and 1 - 1.0078125 / 4 = 74.8% of F32; per row of --cols 128 the same 1.00781.
TEST_F(FormatCommands, FormatsTablesEachFormatsNumbers) {
  const std::string out = ok("formats --cols 128");
  for (const char* line :
       {"e4m3   MXFP8      8    7       448        2^-6          2^-9           17.81        8  NaN "
        "0x7F/0xFF, no Inf\n",
        "e5m2   MXFP8      8   15     57344       2^-14         2^-16           31.81       15  Inf "
        "0x7C/0xFC, NaN "
        "0x7D-7F/0xFD-FF\n",
        "e3m2   MXFP6      6    3        28        2^-2          2^-4            8.81        4  none\n",
        "e2m3   MXFP6      6    1       7.5         2^0          2^-3            5.91        2  none\n",
        "e2m1   MXFP4      4    1         6         2^0          2^-1            3.58        2  none\n",
        "int8   MXINT8     8    0  1.984375        2^-6          2^-6            6.99        0  none; value "
        "= code/64, "
        "+-127\n",
        "ue8m0  scale      8  127     2^127      2^-127             -          254.00        -  0xFF = NaN; "
        "no zero, "
        "no sign\n",
        "(128 columns per row for per-row scales",
        "format scale     tensor       row     1x128      1x32   128x128     32x32  saved at 1x128 vs bf16, "
        "vs f32\n",
        "e4m3   ue8m0    1.00000   1.00781   1.00781   1.03125   1.00006   1.00098   49.6%,  74.8%\n",
        "e4m3   f32      1.00000   1.03125   1.03125   1.12500   1.00024   1.00391   48.4%,  74.2%\n",
        "e3m2   ue8m0    0.75000   0.75781   0.75781   0.78125   0.75006   0.75098   62.1%,  81.1%\n",
        "e2m1   f32      0.50000   0.53125   0.53125   0.62500   0.50024   0.50391   73.4%,  86.7%\n"})
    EXPECT_NE(out.find(line), std::string::npos) << line << "\n" << out;
  EXPECT_NE(ok("formats").find("(4096 columns per row"), std::string::npos);
  expect_error("formats --cols 0", "--cols: Value 0 not in range 1 to 1073741824", 2);
}

// One row [1, 3, 500, -0.25] worked by hand, E4M3 over one block (tensor, row and 1x32 are the same
// block here). ceil: 500 / 448 rounds up to a scale of 2, the scaled values 0.5, 1.5, 250, -0.125 are
// E4M3 except 250, which goes to 256 (the codes of 2^7's binade step by 16: 240, then 256): 512 back,
// relative error 12 / 500 = 0.024, mean 0.024 / 4, SQNR 10 log10((1 + 9 + 250000 + 0.0625) / 144) =
// 32.40 dB. floor: a scale of 1 leaves 500, past 464 (448 + half an ulp): saturated to 448, error 52 /
// 500 = 0.104, SQNR 10 log10(250010.0625 / 2704) = 19.66 dB, one value of four saturated. Bytes per
// value: 4 codes and one UE8M0 byte = 1.25, or one f32 scale (fp32 rule) = 2.
TEST_F(FormatCommands, QuantErrorOfAHandWorkedTensor) {
  const auto file = temp("row.f32");
  write_f32(file, {1.0f, 3.0f, 500.0f, -0.25f});
  const std::string out = ok("quant-error --file '" + file.string() +
                             "' --cols 4 --formats e4m3 --granularities tensor,row,1x32");
  for (const char* blocks : {"tensor  ", "row     ", "1x32    "}) {
    EXPECT_NE(out.find(std::string("e4m3   ceil   ") + blocks +
                       "     32.40   2.400e-02   6.000e-03   0.00e+00   1.2500\n"),
              std::string::npos)
        << blocks << "\n"
        << out;
    EXPECT_NE(out.find(std::string("e4m3   floor  ") + blocks +
                       "     19.66   1.040e-01   2.600e-02   2.50e-01   1.2500\n"),
              std::string::npos)
        << blocks << "\n"
        << out;
    // f32 scales: 500 maps to 448 (up to the scale's rounding), the small values lose at most half an
    // ulp of E4M3's 3 mantissa bits (2^-4 relative); nothing saturates.
    const size_t at = out.find(std::string("e4m3   fp32   ") + blocks);
    ASSERT_NE(at, std::string::npos) << out;
    double sqnr = 0, max_rel = 0, mean_rel = 0, saturated = 0, bpv = 0;
    ASSERT_EQ(std::sscanf(out.c_str() + at + 23, "%lf %lf %lf %lf %lf", &sqnr, &max_rel, &mean_rel,
                          &saturated, &bpv),
              5)
        << out;
    EXPECT_LE(max_rel, 1.0 / 16);
    EXPECT_GT(max_rel, 0.0);
    EXPECT_EQ(saturated, 0.0);
    EXPECT_EQ(bpv, 2.0);
  }
  EXPECT_NE(out.find("(raw f32) [1, 4] (fast CPU quantizer"), std::string::npos) << out;
  // Two rows of 2: per row the second row [500, -0.25] scales by 2 under ceil as before, the first [1, 3]
  // by 2^-7 (3 / 448 rounds up to 2^-7; 1 and 3 times 128 are E4M3): the same one error, now 2 scales.
  const std::string rows = ok("quant-error --file '" + file.string() +
                              "' --cols 2 --formats e4m3 --rules ceil --granularities row");
  EXPECT_NE(rows.find("e4m3   ceil   row          32.40   2.400e-02   6.000e-03   0.00e+00   1.5000\n"),
            std::string::npos)
      << rows;
}

// "saturated" counts values that round past the largest code. At the tie above the largest value the
// rounding to even decides: E5M2's 61440 lies between 57344 (code 0x7B, odd) and the next step, so it
// rounds up and saturates; E4M3's 464 lies above 448 (0x7E, even) and rounds down to it, no saturation.
// floor scales of 1 keep both values as they are (61440 / 57344 and 464 / 448 round down to 2^0).
TEST_F(FormatCommands, QuantErrorSaturationAtTheTie) {
  const auto e5m2 = temp("tie5.f32"), e4m3 = temp("tie4.f32");
  write_f32(e5m2, {61440.0f, 1.0f});
  write_f32(e4m3, {464.0f, 1.0f});
  const std::string args = " --cols 2 --rules floor --granularities tensor --formats ";
  EXPECT_NE(ok("quant-error --file '" + e5m2.string() + "'" + args + "e5m2")
                .find("e5m2   floor  tensor       23.52   6.667e-02   3.333e-02   5.00e-01   1.5000\n"),
            std::string::npos);
  // 61440 -> 57344: SQNR 10 log10((61440^2 + 1) / 4096^2) = 23.52 dB. 464 -> 448: relative error
  // 16 / 464 = 0.0345, mean over two values 0.0172, SQNR 10 log10((464^2 + 1) / 16^2) = 29.25 dB.
  EXPECT_NE(ok("quant-error --file '" + e4m3.string() + "'" + args + "e4m3")
                .find("e4m3   floor  tensor       29.25   3.448e-02   1.724e-02   0.00e+00   1.5000\n"),
            std::string::npos);
}

// A NaN makes its block's scale NaN and every value in the block NaN: the largest error is NaN, not the
// largest of the other values' errors (it read 0 before).
TEST_F(FormatCommands, QuantErrorReportsANaNBlockAsNaN) {
  const auto file = temp("nan.f32");
  write_f32(file, {1.0f, std::numeric_limits<float>::quiet_NaN(), 2.0f, 3.0f});
  const std::string out = ok("quant-error --file '" + file.string() +
                             "' --cols 4 --formats e4m3 --rules ceil --granularities tensor");
  EXPECT_NE(out.find("e4m3   ceil   tensor         nan         nan         nan   0.00e+00   1.2500\n"),
            std::string::npos)
      << out;
}

// The reference quantizer and the fast one give the same report, and the seed decides the data.
TEST_F(FormatCommands, QuantErrorReferenceAndFastAgree) {
  const std::string args =
      "quant-error --rows 8 --cols 256 --dist laplace --outliers 0.01 --seed 7 --amax-floor 1e-4";
  auto body = [](const std::string& s) { return s.substr(s.find("\nscales:")); };
  const std::string fast = ok(args), ref = ok(args + " --reference");
  EXPECT_NE(fast.find("random laplace [8, 256], seed 7, outliers 0.01 x 100 (fast"), std::string::npos)
      << fast;
  EXPECT_NE(ref.find("(scalar reference quantizer)"), std::string::npos) << ref;
  EXPECT_EQ(body(fast), body(ref));
  // Each row is its own format: E4M3 and E5M2 lose different amounts of the same data.
  auto row = [&](const std::string& head) {
    const size_t at = fast.find(head);
    return at == std::string::npos ? std::string() : fast.substr(at + 6, fast.find('\n', at) - at - 6);
  };
  EXPECT_NE(row("\ne4m3  "), row("\ne5m2  ")) << fast;
  // Random continuous data loses something in every format, rule and block (all zeros would not).
  EXPECT_EQ(fast.find(" inf "), std::string::npos) << fast;
  EXPECT_EQ(fast.find(" 0.000e+00 "), std::string::npos) << fast;
  EXPECT_EQ(std::count(fast.begin(), fast.end(), '\n'), 5 + 6 * 3 * 6);  // header + formats x rules x blocks
  EXPECT_NE(body(ok("quant-error --rows 8 --cols 256 --dist laplace --outliers 0.01 --seed 8")), body(fast));
}

// A .safetensors tensor in BF16: [2, 3] of values E4M3 holds exactly under one power-of-two scale, so
// nothing is lost (SQNR inf); the tensor must be named, and only float tensors are read.
TEST_F(FormatCommands, QuantErrorReadsASafetensorsTensor) {
  const auto file = temp("t.safetensors");
  // BF16 bits of 1, -2, 0.5, 448, 0.75, -3; and an I32 tensor.
  const std::vector<uint16_t> w = {0x3F80, 0xC000, 0x3F00, 0x43E0, 0x3F40, 0xC040};
  const std::vector<int32_t> ids = {1, 2};
  const float one = 1.0f;
  mx8::io::write_safetensors(
      file.string(),
      {{{"w", mx8::io::DType::BF16, {2, 3}}, {reinterpret_cast<const uint8_t*>(w.data()), w.size() * 2}},
       {{"ids", mx8::io::DType::I32, {2}}, {reinterpret_cast<const uint8_t*>(ids.data()), ids.size() * 4}},
       {{"s", mx8::io::DType::F32, {}}, {reinterpret_cast<const uint8_t*>(&one), 4}}});
  const std::string out = ok("quant-error --file '" + file.string() +
                             "' --tensor w --formats e4m3 --rules ceil --granularities tensor,row");
  EXPECT_NE(out.find(" : w [2, 3] (fast"), std::string::npos) << out;
  // tensor: 6 codes + 1 scale byte; row: 6 codes + 2 scale bytes.
  EXPECT_NE(out.find("e4m3   ceil   tensor         inf   0.000e+00   0.000e+00   0.00e+00   1.1667\n"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("e4m3   ceil   row            inf   0.000e+00   0.000e+00   0.00e+00   1.3333\n"),
            std::string::npos)
      << out;
  expect_error("quant-error --file '" + file.string() + "'", "choose a tensor with --tensor (");
  expect_error("quant-error --file '" + file.string() + "' --tensor s", "tensor s is a scalar");
  const auto empty = temp("empty.safetensors");
  mx8::io::write_safetensors(empty.string(), {{{"e", mx8::io::DType::F32, {0, 4}}, {}}});
  expect_error("quant-error --file '" + empty.string() + "' --tensor e",
               "tensor e is empty: no values to quantize");
  expect_error("quant-error --file '" + file.string() + "' --tensor ids",
               "tensor ids is I32; quant-error reads F32, BF16 and F16");
}

TEST_F(FormatCommands, QuantErrorRefusesBadArguments) {
  expect_error("quant-error --dist cauchy", "--dist must be normal, uniform or laplace, got 'cauchy'");
  expect_error("quant-error --outliers 1.5", "--outliers must be a fraction in [0, 1]");
  expect_error("quant-error --outliers nan", "--outliers must be a fraction in [0, 1]");
  expect_error("quant-error --formats e4m3,e9m9", "unknown format 'e9m9' in --formats");
  expect_error("quant-error --rules ceil,nearest",
               "unknown scale rule 'nearest' in --rules (ceil, floor, fp32)");
  expect_error("quant-error --granularities 1x128,3y", "unknown granularity '3y'");
  expect_error("quant-error --rows 0", "--rows and --cols must be positive");
  const auto odd = temp("odd.f32");
  std::ofstream(odd, std::ios::binary) << "abcdef";  // 6 bytes
  expect_error("quant-error --file '" + odd.string() + "'", "size 6 is not a whole number of f32 values");
  const auto three = temp("three.f32");
  write_f32(three, {1, 2, 3});
  expect_error("quant-error --file '" + three.string() + "' --cols 2",
               "3 values do not fill rows of --cols 2");
  expect_error("quant-error --file '" + three.string() + "' --cols 0", "--cols must be positive");
  expect_error("quant-error --file /nonexistent/x.f32", "/nonexistent/x.f32: cannot open for reading");
  const auto empty = temp("empty.f32");
  write_f32(empty, {});
  expect_error("quant-error --file '" + empty.string() + "'", "the file is empty: no values to quantize");
}

}  // namespace
