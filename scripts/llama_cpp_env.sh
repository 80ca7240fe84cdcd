# Sourced by the scripts that run llama.cpp beside mx8 (peer_llama_cpp.sh, make_llama_cpp_fixtures.sh):
# fetches the prebuilt llama.cpp of npm's node-llama-cpp 3.22.1 (release v0.5.0) into WORK (default
# /tmp/mx8_peer_llama_cpp), with its headers and examples from the source bundle the same npm package
# carries, enters WORK, and sets `llama_cpp_link`: the g++ flags that build a program against it.
# llama.cpp stays outside the tree; it is a peer to measure and a reference to check against.
W=${WORK:-/tmp/mx8_peer_llama_cpp}
mkdir -p "$W" && cd "$W"
if [ ! -f package/bins/linux-x64/libllama.v0.5.0.so ]; then
  npm pack --silent @node-llama-cpp/linux-x64@3.22.1 node-llama-cpp@3.22.1
  tar xzf node-llama-cpp-linux-x64-3.22.1.tgz
  mkdir -p main && tar xzf node-llama-cpp-3.22.1.tgz -C main
fi
[ -d llama.cpp ] || git clone -q main/package/llama/gitRelease.bundle llama.cpp
cp package/bins/linux-x64/*.so .  # ggml looks for its CPU backends beside the executable
llama_cpp_link=(-Illama.cpp/include -Illama.cpp/ggml/include -L. -l:libllama.v0.5.0.so -l:libggml.v0.5.0.so
  -l:libggml-base.so -Wl,-rpath,"$W")
