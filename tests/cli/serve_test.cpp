// `mx8 serve` as a user runs it: the executable on the bundled model with a chat template file, on a
// free port; requests over HTTP; Ctrl-C (SIGINT) stops it cleanly. Then the official OpenAI and
// Anthropic client libraries against it (tests/server/sdk: skipped, with the reason, where node or
// the packages are not installed; scripts/setup.sh installs them when npm is present).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <string>

#include "cli/run_mx8.h"

namespace {

const std::string kSource = MX8_SOURCE_DIR;

// `mx8 serve ...` as a child process whose stderr we read.
class ServeProcess {
 public:
  explicit ServeProcess(const std::string& args) {
    int fds[2];
    if (pipe(fds) != 0) return;
    pid_ = fork();
    if (pid_ == 0) {
      dup2(fds[1], 2);
      close(fds[0]);
      close(fds[1]);
      execl("/bin/sh", "sh", "-c", ("exec " + mx8::test::mx8_command() + " serve " + args).c_str(), nullptr);
      _exit(127);
    }
    close(fds[1]);
    err_ = fds[0];
  }
  ~ServeProcess() {
    if (pid_ > 0 && !waited_) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    if (err_ >= 0) close(err_);
  }
  // Reads stderr until `needle` appears (or `seconds` pass / the process ends); returns all of it.
  std::string read_until(const std::string& needle, int seconds) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
    while (log_.find(needle) == std::string::npos && std::chrono::steady_clock::now() < end) {
      pollfd p{err_, POLLIN, 0};
      if (poll(&p, 1, 100) <= 0) continue;
      char buf[1024];
      const ssize_t n = read(err_, buf, sizeof buf);
      if (n <= 0) break;
      log_.append(buf, size_t(n));
    }
    return log_;
  }
  // The port from "listening on http://127.0.0.1:PORT", or 0.
  int port() {
    const std::string log = read_until("listening on", 30);
    const size_t at = log.find("127.0.0.1:");
    return at == std::string::npos ? 0 : std::atoi(log.c_str() + at + 10);
  }
  // Sends `sig` and returns the exit status (-1 if it did not exit within `seconds`).
  int stop(int sig, int seconds) {
    kill(pid_, sig);
    for (int i = 0; i < seconds * 20; ++i) {
      int st = 0;
      if (waitpid(pid_, &st, WNOHANG) == pid_) {
        waited_ = true;
        read_until("\x01", 1);  // the rest of stderr
        return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
      }
      usleep(50000);
    }
    return -1;
  }
  const std::string& log() const { return log_; }

 private:
  pid_t pid_ = -1;
  int err_ = -1;
  bool waited_ = false;
  std::string log_;
};

std::string serve_args() {
  return "--port 0 --parallel 3 --template '" + kSource + "/tests/server/sdk/plain_template.jinja'";
}

TEST(MxServe, AnswersAndStopsCleanlyOnSigint) {
  if (!std::filesystem::exists(mx8::test::mx8_exe())) GTEST_SKIP() << "mx8 executable not built";
  ServeProcess p(serve_args());
  const int port = p.port();
  ASSERT_GT(port, 0) << p.log();
  EXPECT_NE(p.log().find("as \"stories260K\""), std::string::npos) << p.log();
  httplib::Client c("127.0.0.1", port);
  auto r =
      c.Post("/v1/chat/completions",
             R"({"messages": [{"role": "user", "content": "A cat"}], "max_tokens": 8})", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  // A second server on the same port is an error that names it (the thread that waits for signals,
  // already started, is let go: exit status 1, not an abort).
  int status = 0;
  const std::string out = mx8::test::run("serve --port " + std::to_string(port), &status);
  EXPECT_EQ(status, 1) << out;
  EXPECT_NE(out.find("cannot listen on 127.0.0.1:" + std::to_string(port)), std::string::npos) << out;
  EXPECT_EQ(out.find("memory plan"), std::string::npos) << out;  // said before the model is read
  EXPECT_EQ(p.stop(SIGINT, 10), 0) << p.log();
  EXPECT_NE(p.log().find("stopping"), std::string::npos) << p.log();
  EXPECT_NE(p.log().find("generated"), std::string::npos) << p.log();
  EXPECT_NE(p.log().find("mx8 serve: /v1/chat/completions "), std::string::npos)
      << p.log();  // a line per request
}

// --quiet: no line per request. --queue 0: no request waits (the limits' ends are accepted; past them,
// refused by name).
TEST(MxServe, QuietAndNoQueue) {
  if (!std::filesystem::exists(mx8::test::mx8_exe())) GTEST_SKIP() << "mx8 executable not built";
  ServeProcess p(serve_args() + " --quiet --queue 0");
  const int port = p.port();
  ASSERT_GT(port, 0) << p.log();
  EXPECT_NE(p.log().find("3 at once (+0 waiting)"), std::string::npos) << p.log();
  httplib::Client c("127.0.0.1", port);
  auto r = c.Post("/v1/completions", R"({"prompt": "A cat", "max_tokens": 4})", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(p.stop(SIGTERM, 10), 0) << p.log();
  EXPECT_EQ(p.log().find("/v1/completions"), std::string::npos) << p.log();
  for (const char* queue : {"-1", "65537"}) {
    int status = 0;
    const std::string out = mx8::test::run(std::string("serve --port 0 --queue ") + queue, &status);
    EXPECT_EQ(status, 1) << out;
    EXPECT_NE(out.find("--queue must be from 0 to 65536"), std::string::npos) << out;
  }
}

TEST(MxServe, BadSettingsAreErrorsBeforeListening) {
  if (!std::filesystem::exists(mx8::test::mx8_exe())) GTEST_SKIP() << "mx8 executable not built";
  const std::pair<const char*, const char*> cases[] = {
      {"serve --parallel 0", "--parallel"},
      {"serve --template /no/such/file.jinja", "/no/such/file.jinja"},
      {"serve --temperature nan --port 0", "temperature"},
      {"serve --ctx 512 --kv-positions 400 --port 0", "KV cache of 400 positions: one sequence needs 512"},
      {"serve --kv-positions -1 --port 0", "--kv-positions"},
      {"serve --attention fast --port 0", "--attention"},
  };
  for (const auto& [args, says] : cases) {
    int status = 0;
    const std::string out = mx8::test::run(args, &status);
    EXPECT_EQ(status, 1) << args;
    EXPECT_NE(out.find(says), std::string::npos) << args << ": " << out;
  }
  // An address that is not this machine's (192.0.2.0/24 is reserved for documentation), before the
  // model is read.
  int status = 0;
  const std::string out = mx8::test::run("serve --host 192.0.2.1 --port 0", &status);
  EXPECT_EQ(status, 1) << out;
  EXPECT_NE(out.find("cannot listen on 192.0.2.1:0 (in use, or not an address of this machine)"),
            std::string::npos)
      << out;
  EXPECT_EQ(out.find("memory plan"), std::string::npos) << out;
}

TEST(MxServe, OfficialOpenAiAndAnthropicClients) {
  if (!std::filesystem::exists(mx8::test::mx8_exe())) GTEST_SKIP() << "mx8 executable not built";
  const std::string sdk = kSource + "/tests/server/sdk";
  if (std::system("node --version > /dev/null 2>&1") != 0) GTEST_SKIP() << "node is not installed";
  if (!std::filesystem::exists(sdk + "/node_modules/openai") ||
      !std::filesystem::exists(sdk + "/node_modules/@anthropic-ai/sdk"))
    GTEST_SKIP() << "the client libraries are not installed: npm ci --prefix " << sdk;
  ServeProcess p(serve_args());
  const int port = p.port();
  ASSERT_GT(port, 0) << p.log();
  const std::string cmd =
      "MX8_SERVER_URL=http://127.0.0.1:" + std::to_string(port) + " node '" + sdk + "/sdk_clients.mjs' 2>&1";
  int status = -1;
  const std::string out = mx8::test::run_shell(cmd, &status);
  EXPECT_EQ(status, 0) << out;
  EXPECT_NE(out.find("all checks passed"), std::string::npos) << out;
  EXPECT_EQ(p.stop(SIGTERM, 10), 0) << p.log();
}

}  // namespace
