// ClientConnection: see client_connection.h.
#include "server/client_connection.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdlib>
#include <utility>

namespace mx8::server {
namespace {

// An IPv4-mapped IPv6 address as IPv4 ("::ffff:127.0.0.1" -> "127.0.0.1"), as the library writes the
// peer of a dual-stack listener.
std::string without_mapping(std::string addr) {
  if (addr.rfind("::ffff:", 0) == 0 && addr.find('.') != std::string::npos) addr = addr.substr(7);
  return addr;
}

// The port and the numeric address (without_mapping) of a socket address.
bool port_and_address(const sockaddr_storage& sa, int& port, std::string& addr) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (sa.ss_family == AF_INET) {
    const auto& a = reinterpret_cast<const sockaddr_in&>(sa);
    port = ntohs(a.sin_port);
    if (!inet_ntop(AF_INET, &a.sin_addr, buf, sizeof buf)) return false;
  } else if (sa.ss_family == AF_INET6) {
    const auto& a = reinterpret_cast<const sockaddr_in6&>(sa);
    port = ntohs(a.sin6_port);
    if (!inet_ntop(AF_INET6, &a.sin6_addr, buf, sizeof buf)) return false;
  } else {
    return false;
  }
  addr = without_mapping(buf);
  return true;
}

}  // namespace

int find_tcp_socket(const std::string& remote_addr, int remote_port, int local_port) {
  DIR* dir = opendir("/proc/self/fd");
  if (!dir) return -1;
  const std::string want = without_mapping(remote_addr);
  int found = -1;
  while (dirent* e = readdir(dir)) {
    char* end = nullptr;
    const long fd = std::strtol(e->d_name, &end, 10);
    if (end == e->d_name || *end != '\0' || fd == dirfd(dir)) continue;
    struct stat st {};
    if (fstat(int(fd), &st) != 0 || !S_ISSOCK(st.st_mode)) continue;
    sockaddr_storage local{}, peer{};
    socklen_t ll = sizeof local, pl = sizeof peer;
    if (getsockname(int(fd), reinterpret_cast<sockaddr*>(&local), &ll) != 0 ||
        getpeername(int(fd), reinterpret_cast<sockaddr*>(&peer), &pl) != 0)
      continue;  // a listener, or not connected
    int lp = -1, rp = -1;
    std::string la, ra;
    if (port_and_address(local, lp, la) && port_and_address(peer, rp, ra) && lp == local_port &&
        rp == remote_port && ra == want) {
      found = int(fd);
      break;
    }
  }
  closedir(dir);
  return found;
}

ClientConnection::ClientConnection(std::string remote_addr, int remote_port, int local_port)
    : remote_addr_(std::move(remote_addr)), remote_port_(remote_port), local_port_(local_port) {}

bool ClientConnection::gone() {
  if (!searched_) {
    searched_ = true;
    fd_ = find_tcp_socket(remote_addr_, remote_port_, local_port_);
  }
  if (fd_ < 0) return false;
  char c;
  const ssize_t n = recv(fd_, &c, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n > 0) return false;  // a pipelined request waits: the client is there
  if (n == 0) return true;  // the peer closed its side
  return errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
}

}  // namespace mx8::server
