// Whether the client of a request that a handler is still working on has gone away.
//
// cpp-httplib 0.11 (Debian 12's) gives a handler neither its socket nor a signal when the peer leaves,
// so a non-streaming generation would run to its token limit for a client that is no longer there,
// holding a batch slot. The socket is found once among the process's descriptors by the connection's
// two ports and the peer's address (unique while the connection is open; the library closes the socket
// only after the handler returns, so the descriptor stays this connection's), then probed as the
// library's later versions probe theirs (Request::is_connection_closed): a peek that reads 0 bytes, or
// fails with anything but "no data yet", means the peer closed or reset the connection. Linux only
// (/proc/self/fd); elsewhere, or where the socket is not found, the client is taken to be there.
#pragma once

#include <string>

namespace mx8::server {

class ClientConnection {
 public:
  ClientConnection(std::string remote_addr, int remote_port, int local_port);
  // True once the peer has closed or reset the connection (the search runs at the first call).
  bool gone();

 private:
  std::string remote_addr_;
  int remote_port_, local_port_;
  bool searched_ = false;
  int fd_ = -1;
};

// The descriptor of the open TCP socket between local_port and remote_addr:remote_port, or -1.
int find_tcp_socket(const std::string& remote_addr, int remote_port, int local_port);

}  // namespace mx8::server
