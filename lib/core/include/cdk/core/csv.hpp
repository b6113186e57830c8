#pragma once

#include <string>
#include <vector>

namespace cdk {

/// A parsed CSV file: a header row and data rows (RFC 4180 quoting).
struct CsvTable {
    std::vector<std::string> header;             ///< column names
    std::vector<std::vector<std::string>> rows;  ///< one entry per data row, header.size() cells

    /// Index of a column, or -1 when absent.
    int column(const std::string& name) const;
    /// Index of a column; throws ConfigError naming the file and the column when absent.
    int require_column(const std::string& name, const std::string& file) const;
};

/// Read a CSV file with a header row; throws IoError/ConfigError naming the file.
CsvTable read_csv(const std::string& path);

/// Quote a cell if it holds a comma, quote or newline.
std::string csv_escape(const std::string& cell);

/// Join cells into one CSV line (no trailing newline).
std::string csv_line(const std::vector<std::string>& cells);

}  // namespace cdk
