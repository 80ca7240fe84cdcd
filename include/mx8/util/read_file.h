// A whole file read into a string, with errors that name the file. Shared by every command that takes
// a text file (templates, tokenizer files, prompts, evaluation text): an std::ifstream opens a folder
// without complaint and reads nothing from it, which once turned a mistyped path into an empty text.
#pragma once

#include <filesystem>
#include <string>

namespace mx8 {

// Throws mx8::Error "<path>: cannot open for reading" (missing or unreadable), "<path>: is a folder,
// not a file", or "<path>: read failed".
std::string read_file(const std::filesystem::path& path);

}  // namespace mx8
