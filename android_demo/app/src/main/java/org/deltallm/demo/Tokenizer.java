package org.deltallm.demo;

import java.nio.ByteBuffer;
import java.nio.CharBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CharsetDecoder;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;

/**
 * The program's tokenizer.json, tokenised natively (the same C++ tokenizer as
 * {@code deltallm_runner tokenize}; byte-level BPE as SmolLM2 and Llama-3 use).
 */
public final class Tokenizer implements AutoCloseable {
    private long handle;

    private Tokenizer(long handle) {
        this.handle = handle;
    }

    public static Tokenizer load(String tokenizerJson) throws LlmException {
        NativeLibrary.load();
        return new Tokenizer(nativeLoad(tokenizerJson));
    }

    /** Ids of text, special tokens written in the text included; no BOS is added. */
    public int[] encode(String text) {
        return nativeEncode(live(), text.getBytes(StandardCharsets.UTF_8));
    }

    /** Text of ids; a character cut at the end is dropped (see {@link Stream} for streaming). */
    public String decode(int[] ids, boolean skipSpecial) {
        return new String(nativeDecode(live(), ids, skipSpecial), StandardCharsets.UTF_8);
    }

    /** The id of a token (e.g. "<|im_start|>"), or -1. */
    public int tokenId(String token) {
        return nativeTokenId(live(), token);
    }

    @Override
    public synchronized void close() {
        if (handle != 0) {
            nativeClose(handle);
            handle = 0;
        }
    }

    private long live() {
        if (handle == 0) {
            throw new IllegalStateException("the tokenizer is closed");
        }
        return handle;
    }

    /** Streaming detokenisation: text appears only once its UTF-8 bytes are complete. */
    public final class Stream {
        private final boolean skipSpecial;
        private final IntList ids = new IntList();
        private int emittedChars;
        private final StringBuilder text = new StringBuilder();

        public Stream(boolean skipSpecial) {
            this.skipSpecial = skipSpecial;
        }

        /** Adds a token; returns the text that became complete with it (maybe ""). */
        public String push(int id) {
            ids.add(id);
            String now = completePrefix(nativeDecode(live(), ids.toArray(), skipSpecial));
            String fresh = now.length() > emittedChars ? now.substring(emittedChars) : "";
            emittedChars = Math.max(emittedChars, now.length());
            text.append(fresh);
            return fresh;
        }

        public String text() {
            return text.toString();
        }
    }

    /** The longest prefix of bytes that is complete UTF-8, decoded. */
    static String completePrefix(byte[] bytes) {
        for (int cut = 0; cut <= Math.min(3, bytes.length); cut++) {
            CharsetDecoder d = StandardCharsets.UTF_8.newDecoder()
                    .onMalformedInput(CodingErrorAction.REPORT).onUnmappableCharacter(CodingErrorAction.REPORT);
            try {
                CharBuffer out = d.decode(ByteBuffer.wrap(bytes, 0, bytes.length - cut));
                return out.toString();
            } catch (CharacterCodingException e) {
                // try a shorter prefix: the cut bytes may start a character not yet complete
            }
        }
        return new String(bytes, StandardCharsets.UTF_8);
    }

    private static native long nativeLoad(String path) throws LlmException;
    private static native int[] nativeEncode(long handle, byte[] utf8);
    private static native byte[] nativeDecode(long handle, int[] ids, boolean skipSpecial);
    private static native int nativeTokenId(long handle, String token);
    private static native void nativeClose(long handle);
}
