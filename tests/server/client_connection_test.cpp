// ClientConnection (src/server/client_connection.h): the server side of a real loopback connection is
// found among the process's descriptors and seen to stay while its client is connected (also with bytes
// of a next request waiting), and to go once the client closes or resets it; a connection that does not
// exist is never "gone".
#include "server/client_connection.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

namespace {

using mx8::server::ClientConnection;
using mx8::server::find_tcp_socket;

// A listener on a free loopback port, one client connected to it, and the accepted server side.
struct Loopback {
  int listener = -1, client = -1, server = -1;
  int server_port = 0, client_port = 0;
  Loopback() {
    listener = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (::bind(listener, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(listener, 1) != 0 ||
        ::getsockname(listener, reinterpret_cast<sockaddr*>(&a), &len) != 0)
      return;
    server_port = ntohs(a.sin_port);
    client = ::socket(AF_INET, SOCK_STREAM, 0);
    if (::connect(client, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return;
    server = ::accept(listener, nullptr, nullptr);
    sockaddr_in c{};
    len = sizeof c;
    ::getsockname(client, reinterpret_cast<sockaddr*>(&c), &len);
    client_port = ntohs(c.sin_port);
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
  Loopback l;
  ASSERT_GE(l.server, 0);
  EXPECT_EQ(find_tcp_socket("127.0.0.1", l.client_port, l.server_port), l.server);
  // The client's own socket has the ports the other way round.
  EXPECT_EQ(find_tcp_socket("127.0.0.1", l.server_port, l.client_port), l.client);
  EXPECT_EQ(find_tcp_socket("127.0.0.2", l.client_port, l.server_port), -1);
  EXPECT_EQ(find_tcp_socket("127.0.0.1", l.client_port, l.server_port + 1), -1);
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
