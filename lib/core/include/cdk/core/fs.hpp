#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace cdk {

/// An output file that appears under its final name only when commit() is called.
/// Until then data goes to a hidden temporary name in the same folder; the destructor
/// removes the temporary if commit() was never reached (an error or an interruption).
class AtomicPath {
public:
    /// Plan an output at `final_path`. Throws IoError if its folder does not exist, or
    /// ConfigError if it exists and `overwrite` is false.
    AtomicPath(std::string final_path, bool overwrite);
    ~AtomicPath();
    AtomicPath(const AtomicPath&) = delete;
    AtomicPath& operator=(const AtomicPath&) = delete;

    /// Where to write now (a file or a folder, the caller decides).
    const std::string& temp() const { return temp_; }
    /// The name the output will have.
    const std::string& final_path() const { return final_; }
    /// Rename the temporary onto the final name (replacing an old output when allowed).
    void commit();

private:
    std::string final_;
    std::string temp_;
    bool overwrite_;
    bool committed_ = false;
};

/// Refuse, before any work, an output whose folder does not exist or cannot be written to:
/// IoError "output folder 'F' does not exist (for 'PATH')" or "… is not writable …".
void check_output_folder(const std::string& path);

/// The absolute path with links resolved as far as it exists (the rest appended as
/// written, normalised): paths to one file compare equal, and a relative path between two
/// of them is right as the kernel reads it.
std::filesystem::path resolved_path(const std::string& path);

/// An input of a program, for check_not_input: the option that named it, and its path.
struct NamedInput {
    std::string option;  ///< "--pre", "--model", "pairs file" ...
    std::string path;    ///< a file or folder ("/vsi…" paths are not checked)
};

/// Refuse an output that is one of the inputs, or that holds one (a folder output, which
/// --overwrite replaces whole): ConfigError "output 'O' is the input --pre 'I' …". Paths
/// are compared as files (hard and symbolic links, "./a" and "a" alike), so that nothing
/// of the user's is ever overwritten or deleted, --overwrite or not.
void check_not_input(const std::string& output, const std::vector<NamedInput>& inputs);

/// check_not_input for many outputs at once; each path is resolved once, so it costs
/// (outputs + inputs) log inputs. The first input listed is the one an error names.
void check_not_inputs(const std::vector<std::string>& outputs, const std::vector<NamedInput>& inputs);

/// Write `bytes` into the file `path` (created or truncated) and close it, checking every
/// step: a failure throws IoError "cannot write WHAT 'NAME': REASON" (REASON from the
/// system, "No space left on device" on a full disk). `name` is what the user knows the
/// output as (an AtomicPath's final path while `path` is its temporary).
void write_file(const std::string& path, const std::string& bytes, const std::string& what,
                const std::string& name);

/// Write a text file atomically (temporary name, then rename).
void write_text_file(const std::string& path, const std::string& text, bool overwrite = true);

/// `path` expressed relative to folder `base` (generic '/' separators).
std::string relative_path(const std::string& path, const std::string& base);

/// Join a relative path onto a base folder; absolute paths are returned as they are.
std::string resolve_path(const std::string& path, const std::string& base);

/// Shortest decimal text that reads back as the same double (for CSV/JSON output).
std::string format_number(double v);

/// `text` without leading and trailing whitespace (spaces, tabs, CR, LF).
std::string trim(const std::string& text);

/// `text` in ASCII lower case (extensions, option keys, band names).
std::string to_lower(std::string text);

/// Read a whole string as a double, locale-independently; false on empty text or trailing
/// junk ("0.5x", which strtod would accept as 0.5). A leading '+' is allowed.
bool parse_number(const std::string& text, double& v);

}  // namespace cdk
