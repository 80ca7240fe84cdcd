// A GGUF model as one file or as every file of a llama.cpp gguf-split model.
#include <cstdio>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "model/model_source.h"
#include "mx8/error.h"

namespace mx8::model {

namespace {

// The files of a split GGUF, from its first one's name and split.count.
std::vector<std::string> gguf_split_paths(const io::GgufFile& first) {
  const int64_t count = first.get_int("split.count", 1);
  if (count <= 1) return {first.path()};
  static const std::regex pattern(R"((.*)-(\d{5})-of-(\d{5})\.gguf)");
  std::smatch m;
  const std::string& path = first.path();
  if (first.get_int("split.no", 0) != 0 || !std::regex_match(path, m, pattern) || m[2].str() != "00001" ||
      std::stoll(m[3].str()) != count) {
    char first_name[64];
    std::snprintf(first_name, sizeof first_name, "NAME-00001-of-%05lld.gguf", (long long)count);
    throw Error("GGUF file " + path + " is part " + std::to_string(first.get_int("split.no", 0) + 1) +
                " of a " + std::to_string(count) + "-file split model: open its first file, " + first_name);
  }
  std::vector<std::string> paths;
  for (int64_t k = 1; k <= count; ++k) {
    char suffix[64];
    std::snprintf(suffix, sizeof suffix, "-%05lld-of-%05lld.gguf", (long long)k, (long long)count);
    paths.push_back(m[1].str() + suffix);
  }
  return paths;
}

}  // namespace

GgufModelFiles GgufModelFiles::open(const std::string& path) {
  GgufModelFiles g;
  g.files.push_back(io::GgufFile::open(path));
  const std::vector<std::string> paths = gguf_split_paths(g.files[0]);
  std::set<std::string> names;
  for (size_t k = 0; k < paths.size(); ++k) {
    if (k > 0) {
      g.files.push_back(io::GgufFile::open(paths[k]));
      if (g.files[k].get_int("split.no", -1) != int64_t(k) ||
          g.files[k].get_int("split.count", -1) != int64_t(paths.size()))
        throw Error("GGUF file " + paths[k] + " is not part " + std::to_string(k + 1) + " of " +
                    std::to_string(paths.size()) + " of " + path + " (its split.no or split.count differ)");
    }
    for (const io::GgufTensor& t : g.files[k].tensors())
      if (!names.insert(t.name).second)
        throw Error("GGUF file " + paths[k] + ": tensor '" + t.name +
                    "' is in an earlier file of the split too");
  }
  if (const int64_t want = g.meta().get_int("split.tensors.count", 0);
      want > 0 && size_t(want) != names.size())
    throw Error("GGUF split model " + path + ": its files hold " + std::to_string(names.size()) +
                " tensors, split.tensors.count says " + std::to_string(want));
  return g;
}

const io::GgufTensor* GgufModelFiles::find_tensor(const std::string& name) const {
  for (const io::GgufFile& f : files)
    if (const io::GgufTensor* t = f.find_tensor(name)) return t;
  return nullptr;
}

}  // namespace mx8::model
