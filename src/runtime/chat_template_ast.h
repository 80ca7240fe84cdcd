// The parsed form of a chat template: statements and expressions of the Jinja subset.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "mx8/runtime/chat_template.h"
#include "runtime/chat_template_value.h"

namespace mx8::runtime::jinja {

struct Expr;
using ExprP = std::unique_ptr<Expr>;

struct Expr {
  enum Kind {
    kLiteral,  // value
    kName,     // name
    kList,     // args (is_tuple for (a, b))
    kDict,     // args: key0, value0, key1, value1, ...
    kAttr,     // args[0].name
    kIndex,    // args[0][args[1]]
    kSlice,    // args[0][args[1]:args[2]:args[3]] (null parts allowed)
    kCall,     // args[0](args[1..], kwargs)
    kFilter,   // args[0] | name(args[1..], kwargs)
    kTest,     // args[0] is [not] name(args[1..])
    kUnary,    // op args[0]: "-", "+", "not"
    kBinary,   // args[0] op args[1]: + - * / // % ** ~ == != < > <= >= in "not in" and or
    kCond,     // args[0] if args[1] else args[2] (args[2] may be null)
  };
  Kind kind = kLiteral;
  int line = 0;
  Value value;
  std::string name;  // name, attribute, filter, test, operator
  bool negated = false;
  bool is_tuple = false;
  std::vector<ExprP> args;
  std::vector<std::pair<std::string, ExprP>> kwargs;
};

struct Stmt;
using Body = std::vector<std::unique_ptr<Stmt>>;

struct Stmt {
  enum Kind { kText, kOutput, kIf, kFor, kSet, kSetBlock, kBreak, kContinue, kMacro, kCallBlock };
  Kind kind = kText;
  int line = 0;
  std::string text;                                   // kText
  ExprP expr;                                         // kOutput, kSet value, kFor iterable
  std::vector<std::pair<ExprP, Body>> branches;       // kIf: (condition, body)...
  Body body;                                          // kFor, kSetBlock, kMacro
  Body else_body;                                     // kIf, kFor
  std::vector<std::string> targets;                   // kFor loop names; kSet: names (a, b = ...)
  std::string target_attr;                            // kSet/kSetBlock: ns.attr
  ExprP filter;                                       // kFor ... if cond
  std::string name;                                   // kMacro
  std::vector<std::pair<std::string, ExprP>> params;  // kMacro (default may be null)
};

}  // namespace mx8::runtime::jinja

namespace mx8::runtime {
struct ChatTemplate::Program {
  jinja::Body body;
};
// Parses template source (Hugging Face's settings: trim_blocks, lstrip_blocks, no trailing newline).
std::shared_ptr<const ChatTemplate::Program> parse_chat_template(const std::string& source);
// Runs a parsed template with the given top-level variables.
std::string run_chat_template(const ChatTemplate::Program& program, const jinja::Dict& variables);
}  // namespace mx8::runtime
