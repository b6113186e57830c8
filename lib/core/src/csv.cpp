#include "cdk/core/csv.hpp"

#include <fstream>
#include <sstream>

#include "cdk/core/error.hpp"

namespace cdk {

int CsvTable::column(const std::string& name) const {
    for (size_t i = 0; i < header.size(); ++i)
        if (header[i] == name) return static_cast<int>(i);
    return -1;
}

int CsvTable::require_column(const std::string& name, const std::string& file) const {
    int c = column(name);
    if (c < 0) throw ConfigError("CSV file " + quote(file) + " has no column " + quote(name));
    return c;
}

namespace {

// Parses one record starting at pos; handles quoted cells with embedded newlines.
bool parse_record(const std::string& text, size_t& pos, std::vector<std::string>& out) {
    out.clear();
    if (pos >= text.size()) return false;
    std::string cell;
    bool in_quotes = false;
    while (pos < text.size()) {
        char c = text[pos++];
        if (in_quotes) {
            if (c == '"') {
                if (pos < text.size() && text[pos] == '"') {
                    cell += '"';
                    ++pos;
                } else {
                    in_quotes = false;
                }
            } else {
                cell += c;
            }
        } else if (c == '"') {
            in_quotes = true;
        } else if (c == ',') {
            out.push_back(cell);
            cell.clear();
        } else if (c == '\n' || c == '\r') {
            if (c == '\r' && pos < text.size() && text[pos] == '\n') ++pos;
            break;
        } else {
            cell += c;
        }
    }
    out.push_back(cell);
    return true;
}

}  // namespace

CsvTable read_csv(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw IoError("cannot open CSV file " + quote(path));
    std::stringstream ss;
    ss << in.rdbuf();
    std::string text = ss.str();
    if (text.size() >= 3 && text.compare(0, 3, "\xEF\xBB\xBF") == 0) text.erase(0, 3);  // BOM

    CsvTable table;
    size_t pos = 0;
    std::vector<std::string> rec;
    if (!parse_record(text, pos, table.header) || table.header.empty() ||
        (table.header.size() == 1 && table.header[0].empty()))
        throw ConfigError("CSV file " + quote(path) + " is empty (a header row is needed)");
    for (auto& h : table.header) {
        while (!h.empty() && (h.back() == ' ' || h.back() == '\t')) h.pop_back();
        while (!h.empty() && (h.front() == ' ' || h.front() == '\t')) h.erase(0, 1);
    }
    size_t line = 1;
    while (parse_record(text, pos, rec)) {
        ++line;
        if (rec.size() == 1 && rec[0].empty()) continue;  // blank line
        if (rec.size() != table.header.size())
            throw ConfigError("CSV file " + quote(path) + " row " + std::to_string(line) +
                              " has " + std::to_string(rec.size()) + " cells, header has " +
                              std::to_string(table.header.size()));
        table.rows.push_back(rec);
    }
    return table;
}

std::string csv_escape(const std::string& cell) {
    if (cell.find_first_of(",\"\n\r") == std::string::npos) return cell;
    std::string out = "\"";
    for (char c : cell) {
        if (c == '"') out += '"';
        out += c;
    }
    return out + "\"";
}

std::string csv_line(const std::vector<std::string>& cells) {
    std::string line;
    for (size_t i = 0; i < cells.size(); ++i) {
        if (i) line += ',';
        line += csv_escape(cells[i]);
    }
    return line;
}

}  // namespace cdk
