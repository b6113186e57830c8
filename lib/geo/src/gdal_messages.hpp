#pragma once

#include <cpl_error.h>

#include <string>
#include <vector>

namespace cdk::geo {

/// GDAL's messages (errors and warnings) while this lives, kept here instead of going to
/// the process's handler: a scoped CPLPushErrorHandlerEx. CPLGetLastErrorMsg() still
/// reports the last error as usual.
class GdalMessages {
public:
    struct Message {
        CPLErr cls;
        std::string text;
    };

    GdalMessages() { CPLPushErrorHandlerEx(&GdalMessages::collect, this); }
    ~GdalMessages() { CPLPopErrorHandler(); }
    GdalMessages(const GdalMessages&) = delete;
    GdalMessages& operator=(const GdalMessages&) = delete;

    const std::vector<Message>& all() const { return messages_; }

    /// The first message of class CE_Failure or worse; "" if there was none.
    std::string first_failure() const {
        for (const auto& m : messages_)
            if (m.cls >= CE_Failure) return m.text;
        return {};
    }

private:
    static void CPL_STDCALL collect(CPLErr cls, CPLErrorNum, const char* msg) {
        static_cast<GdalMessages*>(CPLGetErrorHandlerUserData())->messages_.push_back({cls, msg ? msg : ""});
    }

    std::vector<Message> messages_;
};

}  // namespace cdk::geo
