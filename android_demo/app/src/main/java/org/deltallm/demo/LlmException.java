package org.deltallm.demo;

/** A failure of the native engine or tokenizer; the message names the problem (one line). */
public class LlmException extends Exception {
    private static final long serialVersionUID = 1L;

    public LlmException(String message) {
        super(message);
    }
}
