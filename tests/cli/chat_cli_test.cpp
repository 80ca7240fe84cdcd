// `mx8 chat` on the bundled stories260K with a template that writes BOS and then each message's text:
// a reply is then `mx8 run`'s greedy continuation of the conversation's text, which these tests use as
// the expected reply. They cover the system message, a turn that does not fit the context (refused, and
// forgotten), the last position a reply may take, and a generated BOS ending a reply.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "cli/run_mx8.h"

namespace {

using mx8::test::mx8_command;
using mx8::test::mx8_exe;
using mx8::test::run_shell;

const std::string kModel = std::string(MX8_SOURCE_DIR) + "/models/stories260K.gguf";

class ChatCommand : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(mx8_exe())) GTEST_SKIP() << mx8_exe() << " not built";
    if (!std::filesystem::exists(kModel)) GTEST_SKIP() << kModel << " absent";
    std::ofstream(template_) << "{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}";
  }
  void TearDown() override { std::filesystem::remove(template_); }
  // Standard output of `mx8 chat` (greedy) given `lines` on standard input; standard error into *err.
  std::string chat(const std::string& args, const std::string& lines, std::string* err = nullptr) {
    const std::string err_file = template_.string() + ".err";
    int st = 0;
    const std::string out =
        run_shell("printf '" + lines + "' | " + mx8_command() + " chat -m '" + kModel + "' --template '" +
                      template_.string() + "' --temperature 0 " + args + " 2>'" + err_file + "'",
                  &st);
    EXPECT_EQ(st, 0) << args << "\n" << out;
    if (err) {
      std::ifstream in(err_file);
      err->assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    }
    std::filesystem::remove(err_file);
    return out;
  }
  // `mx8 run`'s greedy continuation of `prompt` (not echoed), with its final newline, as a reply ends.
  static std::string continuation(const std::string& prompt, int n) {
    int st = 0;
    const std::string out =
        run_shell(mx8_command() + " run -m '" + kModel + "' --temperature 0 --no-echo -n " +
                      std::to_string(n) + " -p '" + prompt + "' 2>/dev/null",
                  &st);
    EXPECT_EQ(st, 0) << out;
    return out;
  }
  const std::filesystem::path template_ =
      std::filesystem::temp_directory_path() / ("mx8_chat_cli_" + std::to_string(::getpid()) + ".jinja");
};

// The system message is the start of the text: the reply continues "Once upon a time, Tom went to the"
// (without it, " went to the" alone continues differently). A reply's first space is not shown.
TEST_F(ChatCommand, TheSystemMessageComesFirst) {
  const std::string with = chat("--system 'Once upon a time, Tom' -n 12", " went to the\\n");
  EXPECT_EQ(" " + with, continuation("Once upon a time, Tom went to the", 12));
  EXPECT_NE(with, chat("-n 12", " went to the\\n"));
}

// "Once upon a time" is BOS and 4 tokens. With --ctx 6 the turn and one generated token do not fit, so
// the turn is refused; with --ctx 7 they do, and the reply is the one token left. A refused turn is
// forgotten: the next one is answered as if it were the first.
TEST_F(ChatCommand, ATurnMustLeaveRoomForOneToken) {
  std::string err;
  EXPECT_EQ(chat("--ctx 6 -n 30", "Once upon a time\\n", &err), "");
  EXPECT_NE(err.find("mx8 chat: the conversation (5 tokens) no longer fits --ctx 6; /reset"),
            std::string::npos)
      << err;
  EXPECT_EQ(chat("--ctx 7 -n 30", "Once upon a time, there was\\nOnce upon a time\\n", &err),
            continuation("Once upon a time", 1));
  EXPECT_NE(err.find("mx8 chat: the conversation (8 tokens) no longer fits --ctx 7; /reset"),
            std::string::npos)
      << err;
}

// Greedy from "Once upon a time", stories260K ends its story with BOS well before 400 tokens: the reply
// stops there, as `mx8 run` does (llama2.c's rule: BOS starts the next story).
TEST_F(ChatCommand, AGeneratedBosEndsTheReply) {
  const std::string expected = continuation("Once upon a time", 400);
  EXPECT_EQ(expected, continuation("Once upon a time", 1000));  // the story did end before 400 tokens
  EXPECT_EQ(chat("-n 400", "Once upon a time\\n"), expected);
}

// A template that thinks and opens the block in the prompt (as DeepSeek-R1's does): the reply starts
// as reasoning, which goes to standard error, so standard output holds the answer alone. stories260K
// never writes </think>: the whole reply is reasoning, and the answer is empty. The reference is the
// same prompt from a template that writes the tag without spelling it (so it does not think): its
// reply, on standard output.
TEST_F(ChatCommand, ReasoningGoesToStandardError) {
  const std::string turns = "{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}";
  std::ofstream(template_) << turns << "{{ '<thi' + 'nk>' }}\n";
  std::string plain = chat("-n 20", "Lily\\n");
  ASSERT_GT(plain.size(), 10u) << plain;
  plain = plain.substr(plain.find_first_not_of(" \n"));  // reasoning drops its leading whitespace
  plain.pop_back();                                      // and the line end after the reply
  std::ofstream(template_) << turns << "<think>\n";
  std::string err;
  EXPECT_EQ(chat("-n 20", "Lily\\n", &err), "\n");
  EXPECT_NE(err.find(plain), std::string::npos) << err << "\n---\n" << plain;
}

// --thinking-budget 5: the reasoning is the model's first five tokens (what -n 5 writes), then the
// block is closed for it and it answers on standard output. --no-thinking: the template closes the
// block in the prompt, and the whole reply is the answer.
TEST_F(ChatCommand, ThinkingBudgetAndNoThinking) {
  const std::string turns = "{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}";
  std::ofstream(template_) << turns
                           << "{% if enable_thinking is defined and not enable_thinking %}<think></think>"
                              "{% else %}<think>\n{% endif %}";
  std::string first, err;
  EXPECT_EQ(chat("-n 5", "Lily\\n", &first), "\n");
  first = first.substr(first.find("> ") + 2);
  first = first.substr(0, first.find("\n"));  // the reasoning's line
  ASSERT_FALSE(first.empty());
  const std::string answer = chat("-n 40 --thinking-budget 5", "Lily\\n", &err);
  EXPECT_GT(answer.size(), 10u) << answer;
  EXPECT_NE(err.find("> " + first + "\n"), std::string::npos) << err << "\n---\n" << first;
  EXPECT_EQ(err.find(answer.substr(0, 8)), std::string::npos) << err;  // the answer is not reasoning
  EXPECT_GT(chat("-n 20 --no-thinking", "Lily\\n", &err).size(), 10u);
  EXPECT_EQ(err.find("> > "), err.find("> ")) << err;  // no reasoning between the prompts

  std::ofstream(template_) << turns;  // a template with no <think> blocks
  int st = 0;
  const std::string out =
      mx8::test::run_shell("printf 'Lily\\n' | " + mx8_command() + " chat -m '" + kModel + "' --template '" +
                               template_.string() + "' --thinking-budget 5 2>&1",
                           &st);
  EXPECT_NE(st, 0);
  EXPECT_NE(out.find("--thinking-budget: the chat template of"), std::string::npos) << out;
}

}  // namespace
