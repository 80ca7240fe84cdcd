// GenerationService (server/generation_service.h) on stories260K: every request, whether alone or
// batched with others, queued or started at once, generates exactly what the engine generates for it
// alone; stop strings, token limits, the context, the queue bound and cancellation end requests as
// documented. References are computed before requests are submitted: two engines must not step one
// model at the same time (they share its scratch buffers).
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "server/failing_backend.h"
#include "server/server_fixture.h"

namespace {

using namespace mx8;
using namespace std::chrono_literals;
using mx8::testing::greedy_job;
using mx8::testing::run_alone;
using mx8::testing::stories;
using server::GenerationJob;
using server::StopReason;
using server::Update;

constexpr int kContext = 2048;

// A request that keeps the engine busy: greedy from "Tom and Lily", stories260K writes 1900 tokens
// without a BOS (its end of a story, which ends a reply), about a second of work.
GenerationJob long_job() {
  return greedy_job("Tom and Lily", 1900);
}

server::ServiceOptions options(int parallel, int waiting = 64) {
  server::ServiceOptions o;
  o.engine.kv_format = backend::KvFormat::f32;
  o.engine.max_context = kContext;
  o.engine.max_sequences = parallel;
  o.max_waiting = waiting;
  return o;
}

// Everything a request produced, once it has ended. A request that never ends fails the test after a
// minute (the longest request here takes about a second) instead of hanging it.
Update collect(server::Generation& g) {
  Update all, u;
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  while (!all.finished) {
    if (std::chrono::steady_clock::now() > deadline) {
      ADD_FAILURE() << "the request did not end within a minute";
      break;
    }
    if (!g.next(u, 100ms)) continue;
    std::string text = all.text + u.text;
    all = u;
    all.text = std::move(text);
  }
  return all;
}

TEST(GenerationService, RequestsBatchedAndQueuedGenerateWhatTheyWouldAlone) {
  cpu::ScopedIsa scalar(cpu::Isa::scalar);
  const std::vector<std::string> prompts = {"Once upon a time", "The cat", "Tom and Lily", "A big dog",
                                            "She saw",          "One day", "The sun",      "Mom said"};
  std::vector<GenerationJob> jobs;
  for (size_t i = 0; i < prompts.size(); ++i) {
    GenerationJob j = greedy_job(prompts[i], 20 + int(i) * 7);
    if (i % 2) {  // half of them sampled: each request's own seeded generator, whatever runs beside it
      j.sampling.temperature = 0.9f;
      j.sampling.seed = 100 + i;
    }
    jobs.push_back(j);
  }
  std::vector<mx8::testing::Reference> refs;
  for (const GenerationJob& j : jobs) refs.push_back(run_alone(j, kContext));

  // Three at once: five of the eight wait, and join as others finish.
  server::GenerationService svc(*stories().model, *stories().be, *stories().tok, options(3));
  std::vector<std::shared_ptr<server::Generation>> gens;
  for (const GenerationJob& j : jobs) gens.push_back(svc.submit(j));
  for (size_t i = 0; i < gens.size(); ++i) {
    const Update u = collect(*gens[i]);
    EXPECT_EQ(u.text, refs[i].text) << prompts[i];
    EXPECT_EQ(u.reason, StopReason::max_tokens) << prompts[i];
    EXPECT_EQ(u.completion_tokens, refs[i].tokens) << prompts[i];
    EXPECT_EQ(gens[i]->prompt_tokens(), int(jobs[i].prompt.size()));
  }
  const server::ServiceStatus st = svc.status();
  EXPECT_EQ(st.running, 0);
  EXPECT_EQ(st.waiting, 0);
  EXPECT_TRUE(st.broken.empty());
}

// Eight requests at once in a KV cache of one 128-position context (EngineOptions::kv_positions): the
// newest are preempted and prefill again, and each still generates what it does alone.
TEST(GenerationService, ManyRequestsShareASmallKvCache) {
  cpu::ScopedIsa scalar(cpu::Isa::scalar);
  constexpr int kSmall = 128;
  const std::vector<std::string> prompts = {"Once upon a time", "The cat", "Tom and Lily", "A big dog",
                                            "She saw",          "One day", "The sun",      "Mom said"};
  std::vector<GenerationJob> jobs;
  std::vector<mx8::testing::Reference> refs;
  for (size_t i = 0; i < prompts.size(); ++i) {
    jobs.push_back(greedy_job(prompts[i], 40 + int(i) * 5));
    refs.push_back(run_alone(jobs.back(), kSmall));
  }
  server::ServiceOptions o = options(8);
  o.engine.max_context = kSmall;
  o.engine.kv_positions = kSmall;
  server::GenerationService svc(*stories().model, *stories().be, *stories().tok, o);
  std::vector<std::shared_ptr<server::Generation>> gens;
  for (const GenerationJob& j : jobs) gens.push_back(svc.submit(j));
  for (size_t i = 0; i < gens.size(); ++i) {
    const Update u = collect(*gens[i]);
    EXPECT_EQ(u.text, refs[i].text) << prompts[i];
    EXPECT_EQ(u.completion_tokens, refs[i].tokens) << prompts[i];
  }
  EXPECT_GT(svc.status().stats.preemptions, 0);
  EXPECT_TRUE(svc.status().broken.empty());
}

TEST(GenerationService, StopStringEndsTheRequestBeforeIt) {
  cpu::ScopedIsa scalar(cpu::Isa::scalar);
  GenerationJob j = greedy_job("Once upon a time", 200);
  const mx8::testing::Reference ref = run_alone(j, kContext);
  // A stop string from the middle of the reference: the text must end right before its first
  // occurrence, and generation must stop there, well short of the 200 tokens.
  const std::string stop = ref.text.substr(ref.text.size() / 2, 6);
  const size_t at = ref.text.find(stop);
  ASSERT_NE(at, std::string::npos);
  j.stop = {"no such text anywhere", stop};

  server::GenerationService svc(*stories().model, *stories().be, *stories().tok, options(2));
  const Update u = collect(*svc.submit(j));
  EXPECT_EQ(u.text, ref.text.substr(0, at));
  EXPECT_EQ(u.reason, StopReason::stop_sequence);
  EXPECT_EQ(u.stop_sequence, stop);
  EXPECT_LT(u.completion_tokens, 150);
  // The slot is free again: a request after it runs to its limit.
  EXPECT_EQ(collect(*svc.submit(greedy_job("The cat", 5))).reason, StopReason::max_tokens);
  // And the engine stopped decoding the first one at its stop string: decode steps made all but the
  // first token of each request (that one comes from its prompt step), (completion - 1) + (5 - 1).
  EXPECT_EQ(svc.status().stats.decode_tokens, u.completion_tokens + 3);
}

TEST(GenerationService, EndOfTextEndsTheTurn) {
  cpu::ScopedIsa scalar(cpu::Isa::scalar);
  // Greedy from "Once upon a time", stories260K ends its story (a BOS) after a few hundred tokens.
  const GenerationJob j = greedy_job("Once upon a time", 1000);
  const mx8::testing::Reference ref = run_alone(j, kContext);
  ASSERT_LT(ref.tokens, 1000);
  server::GenerationService svc(*stories().model, *stories().be, *stories().tok, options(2));
  const Update u = collect(*svc.submit(j));
  EXPECT_EQ(u.reason, StopReason::end_of_turn);
  EXPECT_EQ(u.text, ref.text);
  EXPECT_EQ(u.completion_tokens, ref.tokens);  // the BOS that ended it counts
}

TEST(GenerationService, ContextEndsARequestThatAsksForMore) {
  cpu::ScopedIsa scalar(cpu::Isa::scalar);
  server::ServiceOptions o = options(1);
  o.engine.max_context = 32;
  server::GenerationService svc(*stories().model, *stories().be, *stories().tok, o);
  GenerationJob j = greedy_job("Once upon a time there was a girl", 1000);
  const int prompt = int(j.prompt.size());
  const Update u = collect(*svc.submit(j));
  EXPECT_EQ(u.reason, StopReason::context_full);
  EXPECT_EQ(u.completion_tokens, 32 - prompt);
}

TEST(GenerationService, RefusesJobsThatCannotRun) {
  server::ServiceOptions o = options(1);
  o.engine.max_context = 16;
  server::GenerationService svc(*stories().model, *stories().be, *stories().tok, o);
  GenerationJob empty = greedy_job("x", 5);
  empty.prompt.clear();
  EXPECT_THROW(svc.submit(empty), Error);
  try {
    svc.submit(greedy_job("Once upon a time there was a little girl named Lily who loved", 5));
    ADD_FAILURE() << "a prompt longer than the context was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("context is 16 positions"), std::string::npos) << e.what();
  }
  GenerationJob no_tokens = greedy_job("x", 0);
  EXPECT_THROW(svc.submit(no_tokens), Error);
  GenerationJob bad = greedy_job("x", 5);
  bad.sampling.repetition_penalty = 0;
  EXPECT_THROW(svc.submit(bad), Error);
  GenerationJob outside = greedy_job("x", 5);
  outside.prompt.push_back(512);  // the vocabulary has 512 entries
  EXPECT_THROW(svc.submit(outside), Error);
}

TEST(GenerationService, FullQueueRefusesAndCancelFreesTheSlot) {
  // One slot, one waiting place. A long request holds the slot, the next one waits, the third is
  // refused.
  server::GenerationService svc(*stories().model, *stories().be, *stories().tok, options(1, 1));
  auto a = svc.submit(long_job());
  Update u;
  while (!a->next(u, 100ms)) {
  }
  ASSERT_FALSE(u.finished);  // running: it has produced text
  auto b = svc.submit(greedy_job("The cat", 5));
  EXPECT_EQ(svc.status().running, 1);
  EXPECT_EQ(svc.status().waiting, 1);
  EXPECT_THROW(svc.submit(greedy_job("Tom", 5)), server::ServiceBusy);
  a->cancel();
  const Update ua = collect(*a);
  EXPECT_EQ(ua.reason, StopReason::cancelled);
  EXPECT_LT(ua.completion_tokens, 1900);
  const Update ub = collect(*b);
  EXPECT_EQ(ub.reason, StopReason::max_tokens);
  EXPECT_EQ(ub.completion_tokens, 5);
}

// No waiting places: requests that find a free slot run, the next one is refused. (Each request sits
// in the queue until the engine thread admits it; that moment must not count as waiting.)
TEST(GenerationService, ZeroQueueStillRunsWhatFitsTheSlots) {
  server::GenerationService svc(*stories().model, *stories().be, *stories().tok, options(2, 0));
  auto a = svc.submit(long_job());
  auto b = svc.submit(greedy_job("The cat", 5));
  EXPECT_THROW(svc.submit(greedy_job("Tom", 5)), server::ServiceBusy);
  const Update ub = collect(*b);
  EXPECT_EQ(ub.reason, StopReason::max_tokens);
  EXPECT_EQ(ub.completion_tokens, 5);
  EXPECT_EQ(svc.status().waiting, 0);
  a->cancel();
  EXPECT_EQ(collect(*a).reason, StopReason::cancelled);
  // b's slot is free again (the engine let b go when it ended): a new request is taken.
  EXPECT_EQ(collect(*svc.submit(greedy_job("Tom", 3))).completion_tokens, 3);
}

TEST(GenerationService, CancelledWhileWaitingNeverStarts) {
  server::GenerationService svc(*stories().model, *stories().be, *stories().tok, options(1, 4));
  auto a = svc.submit(long_job());
  Update u;
  while (!a->next(u, 100ms)) {
  }
  auto b = svc.submit(greedy_job("The cat", 500));
  b->cancel();
  const Update ub = collect(*b);
  EXPECT_EQ(ub.reason, StopReason::cancelled);
  EXPECT_EQ(ub.completion_tokens, 0);
  EXPECT_TRUE(ub.text.empty());
  a->cancel();
  EXPECT_EQ(collect(*a).reason, StopReason::cancelled);
}

// A step that fails (a device error) ends every request, running or waiting, with that error, and the
// service refuses new ones from then on: the engine's state is no longer known.
TEST(GenerationService, AFailedStepEndsEveryRequestAndRefusesNewOnes) {
  mx8::testing::FailingBackend failing(*stories().be);
  model::LoadOptions lo;
  lo.max_tokens_per_step = 32;
  const auto model = model::load_llama(mx8::testing::kStoriesModel, failing, lo);
  server::GenerationService svc(*model, failing, *stories().tok, options(1, 4));
  auto a = svc.submit(long_job());
  Update u;
  while (!a->next(u, 100ms)) {
  }
  auto b = svc.submit(greedy_job("The cat", 5));
  failing.fail = true;
  for (auto* g : {a.get(), b.get()}) {
    const Update end = collect(*g);
    EXPECT_EQ(end.reason, StopReason::error);
    EXPECT_NE(end.error.find("injected device failure"), std::string::npos) << end.error;
  }
  EXPECT_NE(svc.status().broken.find("injected device failure"), std::string::npos);
  EXPECT_EQ(svc.status().running, 0);
  EXPECT_EQ(svc.status().waiting, 0);
  try {
    svc.submit(greedy_job("Tom", 5));
    ADD_FAILURE() << "a broken service took a request";
  } catch (const server::ServiceUnavailable& e) {
    EXPECT_NE(std::string(e.what()).find("the server cannot generate: injected device failure"),
              std::string::npos)
        << e.what();
  }
}

TEST(GenerationService, StopEndsEverythingInFlight) {
  auto svc = std::make_unique<server::GenerationService>(*stories().model, *stories().be, *stories().tok,
                                                         options(1));
  auto a = svc->submit(long_job());
  auto b = svc->submit(long_job());
  svc->stop();
  EXPECT_EQ(collect(*a).reason, StopReason::cancelled);
  EXPECT_EQ(collect(*b).reason, StopReason::cancelled);
  EXPECT_THROW(svc->submit(greedy_job("x", 1)), Error);
}

}  // namespace
