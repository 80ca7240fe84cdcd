// ClientConnection (src/server/client_connection.h): the server side of a real loopback connection is
// found among the process's descriptors and seen to stay while its client is connected (also with bytes
// of a next request waiting), and to go once the client closes or resets it; a connection that does not
// exist is never "gone".
#include "server/client_connection.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <vector>

namespace {

using mx8::server::ClientConnection;
using mx8::server::find_tcp_socket;

// A listener on a free loopback port (IPv4, or IPv6's ::1), one client connected to it, and the
// accepted server side.
struct Loopback {
  int listener = -1, client = -1, server = -1;
  int server_port = 0, client_port = 0;
  explicit Loopback(int family = AF_INET) {
    listener = ::socket(family, SOCK_STREAM, 0);
    sockaddr_storage a{};
    socklen_t len = family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6);
    if (family == AF_INET) {
      auto& a4 = reinterpret_cast<sockaddr_in&>(a);
      a4.sin_family = AF_INET;
      a4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    } else {
      auto& a6 = reinterpret_cast<sockaddr_in6&>(a);
      a6.sin6_family = AF_INET6;
      a6.sin6_addr = in6addr_loopback;
    }
    const socklen_t size = len;
    if (::bind(listener, reinterpret_cast<sockaddr*>(&a), size) != 0 || ::listen(listener, 1) != 0 ||
        ::getsockname(listener, reinterpret_cast<sockaddr*>(&a), &len) != 0)
      return;
    server_port = port_of(a);
    client = ::socket(family, SOCK_STREAM, 0);
    if (::connect(client, reinterpret_cast<sockaddr*>(&a), size) != 0) return;
    server = ::accept(listener, nullptr, nullptr);
    sockaddr_storage c{};
    len = sizeof c;
    ::getsockname(client, reinterpret_cast<sockaddr*>(&c), &len);
    client_port = port_of(c);
  }
  static int port_of(const sockaddr_storage& a) {
    return ntohs(a.ss_family == AF_INET ? reinterpret_cast<const sockaddr_in&>(a).sin_port
                                        : reinterpret_cast<const sockaddr_in6&>(a).sin6_port);
  }
  ~Loopback() {
    for (int fd : {listener, client, server})
      if (fd >= 0) ::close(fd);
  }
  void close_client() {
    ::close(client);
    client = -1;
  }
};

TEST(ClientConnection, FindsTheServerSideOfAConnection) {
  // Sixteen more descriptors first, so that the sockets' numbers have two digits, as in a busy server.
  std::vector<int> spare;
  for (int i = 0; i < 16; ++i) spare.push_back(::open("/dev/null", O_RDONLY));
  Loopback l;
  for (int fd : spare) ::close(fd);
  ASSERT_GE(l.server, 10);
  EXPECT_EQ(find_tcp_socket("127.0.0.1", l.client_port, l.server_port), l.server);
  // The client's own socket has the ports the other way round.
  EXPECT_EQ(find_tcp_socket("127.0.0.1", l.server_port, l.client_port), l.client);
  EXPECT_EQ(find_tcp_socket("127.0.0.2", l.client_port, l.server_port), -1);
  EXPECT_EQ(find_tcp_socket("127.0.0.1", l.client_port, l.server_port + 1), -1);
}

TEST(ClientConnection, FindsAnIpv6Connection) {
  Loopback l(AF_INET6);
  if (l.server < 0) GTEST_SKIP() << "no IPv6 loopback on this machine";
  EXPECT_EQ(find_tcp_socket("::1", l.client_port, l.server_port), l.server);
  EXPECT_EQ(find_tcp_socket("127.0.0.1", l.client_port, l.server_port), -1);
}

TEST(ClientConnection, GoneOnlyOnceTheClientCloses) {
  Loopback l;
  ASSERT_GE(l.server, 0);
  ClientConnection c("127.0.0.1", l.client_port, l.server_port);
  EXPECT_FALSE(c.gone());
  ASSERT_EQ(::write(l.client, "GET", 3), 3);  // a pipelined request's first bytes: still there
  EXPECT_FALSE(c.gone());
  char buf[3];
  ASSERT_EQ(::read(l.server, buf, 3), 3);
  EXPECT_FALSE(c.gone());
  l.close_client();
  EXPECT_TRUE(c.gone());
}

TEST(ClientConnection, GoneAfterAReset) {
  Loopback l;
  ASSERT_GE(l.server, 0);
  ClientConnection c("::ffff:127.0.0.1", l.client_port, l.server_port);  // the mapped form is the same peer
  EXPECT_FALSE(c.gone());
  linger lg{1, 0};  // close with RST
  ASSERT_EQ(::setsockopt(l.client, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
  l.close_client();
  EXPECT_TRUE(c.gone());
}

TEST(ClientConnection, AnUnknownConnectionIsNeverGone) {
  Loopback l;
  ASSERT_GE(l.server, 0);
  ClientConnection c("127.0.0.1", l.client_port, l.server_port + 1);
  l.close_client();
  EXPECT_FALSE(c.gone());
}

}  // namespace
