package org.deltallm.demo;

import java.util.List;

/**
 * Chat prompts in the model's own format: ChatML (SmolLM2), Llama-3 headers, BitNet b1.58's
 * "Role: text" turns, or plain text for base models. Chosen from the program's manifest
 * (architecture) and the tokenizer's special tokens.
 */
public enum ChatTemplate {
    CHATML("<|im_end|>"),
    LLAMA3("<|eot_id|>"),
    BITNET("<|eot_id|>"),
    PLAIN(null);

    /** The token that ends an assistant turn (generation stops there), or null. */
    public final String endOfTurn;

    ChatTemplate(String endOfTurn) {
        this.endOfTurn = endOfTurn;
    }

    /** A turn of the conversation. */
    public static final class Turn {
        public final String role;   // "user" or "assistant"
        public final String text;

        public Turn(String role, String text) {
            if (!role.equals("user") && !role.equals("assistant")) {
                throw new IllegalArgumentException("role must be user or assistant, got " + role);
            }
            this.role = role;
            this.text = text;
        }
    }

    public static ChatTemplate detect(String architecture, Tokenizer tokenizer) {
        if (tokenizer.tokenId("<|im_start|>") >= 0 && tokenizer.tokenId("<|im_end|>") >= 0) {
            return CHATML;
        }
        if (tokenizer.tokenId("<|eot_id|>") >= 0) {
            return "bitnet".equals(architecture) ? BITNET : LLAMA3;
        }
        return PLAIN;
    }

    private static final java.util.regex.Pattern DEFAULT_SYSTEM = java.util.regex.Pattern.compile(
            "\\{\\{\\s*'<\\|im_start\\|>system(?:\n|\\\\n)(.*?)<\\|im_end\\|>(?:\n|\\\\n)'\\s*\\}\\}",
            java.util.regex.Pattern.DOTALL);

    /**
     * The system turn a model's own (jinja) chat template adds when the conversation has none, e.g.
     * SmolLM2's "You are a helpful AI assistant named SmolLM, trained by Hugging Face"; null when it
     * adds none (or there is no template). With an empty system prompt the app uses it, as the model's
     * template would.
     */
    public static String defaultSystem(String jinjaTemplate) {
        if (jinjaTemplate == null) {
            return null;
        }
        java.util.regex.Matcher m = DEFAULT_SYSTEM.matcher(jinjaTemplate);
        return m.find() ? m.group(1) : null;
    }

    /** What render puts before the first turn (kept when older turns are dropped). */
    public String systemPrefix(String system) {
        boolean sys = system != null && !system.trim().isEmpty();
        switch (this) {
            case CHATML:
                return sys ? "<|im_start|>system\n" + system + "<|im_end|>\n" : "";
            case LLAMA3:
                return "<|begin_of_text|>"
                        + (sys ? "<|start_header_id|>system<|end_header_id|>\n\n" + system.trim() + "<|eot_id|>" : "");
            case BITNET:
                return "<|begin_of_text|>" + (sys ? "System: " + system.trim() + "<|eot_id|>" : "");
            default:
                return sys ? system + "\n\n" : "";
        }
    }

    /** The prompt text for a conversation, ending where the assistant's next answer begins. */
    public String render(String system, List<Turn> turns) {
        StringBuilder b = new StringBuilder();
        boolean sys = system != null && !system.trim().isEmpty();
        switch (this) {
            case CHATML:
                if (sys) {
                    b.append("<|im_start|>system\n").append(system).append("<|im_end|>\n");
                }
                for (Turn t : turns) {
                    b.append("<|im_start|>").append(t.role).append('\n').append(t.text).append("<|im_end|>\n");
                }
                return b.append("<|im_start|>assistant\n").toString();
            case LLAMA3:
                b.append("<|begin_of_text|>");
                if (sys) {
                    b.append("<|start_header_id|>system<|end_header_id|>\n\n").append(system.trim()).append("<|eot_id|>");
                }
                for (Turn t : turns) {
                    b.append("<|start_header_id|>").append(t.role).append("<|end_header_id|>\n\n")
                            .append(t.text.trim()).append("<|eot_id|>");
                }
                return b.append("<|start_header_id|>assistant<|end_header_id|>\n\n").toString();
            case BITNET:
                b.append("<|begin_of_text|>");
                if (sys) {
                    b.append("System: ").append(system.trim()).append("<|eot_id|>");
                }
                for (Turn t : turns) {
                    b.append(t.role.equals("user") ? "User: " : "Assistant: ").append(t.text.trim()).append("<|eot_id|>");
                }
                return b.append("Assistant: ").toString();
            default:
                if (sys) {
                    b.append(system).append("\n\n");
                }
                for (Turn t : turns) {
                    b.append(t.text).append(t.role.equals("user") ? "\n" : "\n\n");
                }
                return b.toString();
        }
    }
}
