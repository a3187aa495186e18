#pragma once

#include <string_view>

namespace ringserve::text {

// The chat template of the Ring 2.0 checkpoints (tokenizer_config.json of inclusionAI/Ring-V2,
// resource/tokenizer/config_sft), byte for byte. WriteTokenizerFiles puts it in the configs it
// writes; servers always take the template from the checkpoint they load.
extern const std::string_view kRingChatTemplate;

}  // namespace ringserve::text
