// `mx8 cast --to FORMAT [--no-sat] [--rule ceil|floor] [VALUES...]`: encodes numbers into one format and
// shows what comes back. One line per input: the input's f32 bits, the code, the decoded value.
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cli/command.h"
#include "mx8/error.h"
#include "mx8/format/element.h"
#include "mx8/format/scale_rule.h"
#include "mx8/format/ue8m0.h"

namespace {

using namespace mx8::format;

struct CastArgs {
  std::string to;
  bool no_sat = false;
  std::string rule;
  std::vector<std::string> values;
};

std::string lower(std::string s) {
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// decimal (correctly rounded to f32 by strtof: overflow -> Inf, underflow -> 0 or a subnormal),
// [+-]inf / infinity / nan, or 0x followed by 1 to 8 hex digits: the f32 bit pattern itself.
std::optional<float> parse_value(const std::string& token) {
  std::string t = token;
  while (!t.empty() && std::isspace(static_cast<unsigned char>(t.back()))) t.pop_back();
  size_t start = 0;
  while (start < t.size() && std::isspace(static_cast<unsigned char>(t[start]))) ++start;
  t = t.substr(start);
  if (t.empty()) return std::nullopt;
  if (t.size() > 2 && t[0] == '0' && (t[1] == 'x' || t[1] == 'X')) {
    if (t.size() > 10) return std::nullopt;
    uint32_t bits = 0;
    for (size_t i = 2; i < t.size(); ++i) {
      char c = char(std::tolower(static_cast<unsigned char>(t[i])));
      int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
      if (d < 0) return std::nullopt;
      bits = bits << 4 | uint32_t(d);
    }
    return f32_from_bits(bits);
  }
  bool negative = t[0] == '-';
  std::string body = lower(t[0] == '-' || t[0] == '+' ? t.substr(1) : t);
  if (body == "inf" || body == "infinity") return f32_from_bits(negative ? 0xFF800000u : 0x7F800000u);
  if (body == "nan") return f32_from_bits(negative ? 0xFFC00000u : 0x7FC00000u);
  // Only plain decimals from here: no hex floats, no other spellings strtof would take.
  for (char c : body)
    if (!(std::isdigit(static_cast<unsigned char>(c)) || c == '.' || c == 'e' || c == '+' || c == '-'))
      return std::nullopt;
  char* end = nullptr;
  errno = 0;
  float v = std::strtof(t.c_str(), &end);
  if (end != t.c_str() + t.size() || end == t.c_str()) return std::nullopt;
  return v;  // ERANGE still leaves the correctly rounded result (+-Inf, 0 or a subnormal)
}

void cast_one(const std::string& token, const CastArgs& a, std::optional<ElementFormat> elem,
              Ue8m0Round round, std::string& out) {
  std::optional<float> v = parse_value(token);
  if (!v)
    throw mx8::Error("cast: cannot read '" + token + "' as a number (decimal, inf, nan or 0x + f32 bits)");
  uint8_t code;
  float back;
  if (elem) {
    code = encode_element(*elem, *v, !a.no_sat);
    back = decode_element(*elem, code);
  } else {
    code = ue8m0_from_f32(*v, round, !a.no_sat);
    back = ue8m0_to_f32(code);
  }
  char line[96];
  std::snprintf(line, sizeof line, "0x%08X 0x%02X %.9g\n", f32_bits(*v), code, double(back));
  out += line;
}

mx8::cli::CommandRegistration reg{
    "cast", "Encode numbers into a format and decode them back (bits, code, value per line)",
    [](CLI::App& app) {
      auto a = std::make_shared<CastArgs>();
      app.add_option("--to", a->to, "Target format: e4m3, e5m2, e3m2, e2m3, e2m1, int8 or ue8m0")->required();
      app.add_flag("--no-sat", a->no_sat,
                   "Non-saturating: overflow becomes NaN (e4m3) or Inf (e5m2), ue8m0 overflow NaN; "
                   "FP6/FP4/INT8 have no NaN or Inf and always saturate");
      CLI::Option* rule = app.add_option(
          "--rule", a->rule, "ue8m0 only: ceil rounds |x| up to a power of two (default), floor rounds down");
      // VALUES are collected as "extras" rather than a CLI11 positional, so that -inf, -nan and other
      // dash-led values reach the number parser (which names any bad token) instead of the option parser.
      app.allow_extras();
      app.footer(
          "VALUES: decimal numbers, inf, nan (either sign) or 0x-prefixed f32 bit patterns; read from "
          "standard\n"
          "input, one per line, when none are given. Output per input: the input's f32 bits (0xXXXXXXXX), "
          "the\n"
          "code (0xXX) and the decoded value (%.9g). Example: mx8 cast --to e4m3 464 480 -inf 0x7fc00000");
      auto* self = &app;
      return [a, rule, self] {
        a->values = self->remaining();
        std::optional<ElementFormat> elem;
        Ue8m0Round round = Ue8m0Round::up;
        if (a->to == "ue8m0") {
          if (rule->count() && a->rule != "ceil" && a->rule != "floor")
            throw mx8::Error("cast: --rule must be ceil or floor for ue8m0, got '" + a->rule + "'");
          if (a->rule == "floor") round = Ue8m0Round::down;
        } else {
          elem = parse_element_format(a->to);
          if (!elem)
            throw mx8::Error("cast: unknown format '" + a->to +
                             "' (e4m3, e5m2, e3m2, e2m3, e2m1, int8, ue8m0)");
          if (rule->count()) throw mx8::Error("cast: --rule applies only to --to ue8m0");
        }
        std::string out;
        if (!a->values.empty()) {
          for (const auto& v : a->values) cast_one(v, *a, elem, round, out);
          std::fwrite(out.data(), 1, out.size(), stdout);
          return;
        }
        std::string line;
        for (long n = 1; std::getline(std::cin, line); ++n) {
          if (line.find_first_not_of(" \t\r") == std::string::npos) continue;  // blank lines
          out.clear();
          try {
            cast_one(line, *a, elem, round, out);
          } catch (const mx8::Error& e) {
            throw mx8::Error(std::string(e.what()) + " on standard input line " + std::to_string(n));
          }
          std::fwrite(out.data(), 1, out.size(), stdout);
        }
      };
    }};

}  // namespace
