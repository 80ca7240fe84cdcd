// A rule on which tokens a sequence may generate next (structured output: JsonConstraint). The engine
// asks it before each draw of a sequence that has one, and tells it the token drawn.
#pragma once

#include <cstdint>
#include <memory>
#include <span>

namespace mx8::runtime {

class TokenConstraint {
 public:
  virtual ~TokenConstraint() = default;
  // The same rule in the same state, for another sequence (a request's n choices each get one).
  virtual std::unique_ptr<TokenConstraint> clone() const = 0;
  // Sets the logit of every token that may not come next to -infinity. Leaves at least one token.
  virtual void mask(std::span<float> logits) = 0;
  // Moves past `token`, the one drawn.
  virtual void accept(int32_t token) = 0;
  // Whether mask() may rule out a token at the next step. Where it may not, the engine draws the token
  // as it would without the rule (on the backend, say) and still tells accept().
  virtual bool holds_next() const { return true; }
};

}  // namespace mx8::runtime
