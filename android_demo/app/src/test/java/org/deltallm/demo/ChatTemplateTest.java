package org.deltallm.demo;

import static org.junit.Assert.assertEquals;
import static org.junit.Assume.assumeTrue;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import org.junit.Test;

/** Chat templates: ChatML against the model's own jinja template rendered by the host (Python). */
public class ChatTemplateTest {
    @Test
    @SuppressWarnings("unchecked")
    public void chatmlMatchesTheModelsTemplate() throws Exception {
        String path = System.getProperty("deltallm.chat_expect");
        assumeTrue("deltallm.chat_expect is not set", path != null);
        List<Object> cases = (List<Object>) MiniJson.parse(
                new String(Files.readAllBytes(Paths.get(path)), StandardCharsets.UTF_8));
        assertEquals(5, cases.size());
        for (Object c : cases) {
            Map<String, Object> m = (Map<String, Object>) c;
            List<ChatTemplate.Turn> turns = new ArrayList<>();
            for (Object t : (List<Object>) m.get("turns")) {
                Map<String, Object> tm = (Map<String, Object>) t;
                turns.add(new ChatTemplate.Turn((String) tm.get("role"), (String) tm.get("content")));
            }
            String system = (String) m.get("system");
            if (system.isEmpty()) {           // the model's template adds its own system turn: so does the app
                system = ChatTemplate.defaultSystem((String) m.get("template"));
            }
            assertEquals(m.get("expected"), ChatTemplate.CHATML.render(system, turns));
        }
    }

    @Test
    public void llama3AndBitnetFormats() {
        List<ChatTemplate.Turn> turns = Arrays.asList(new ChatTemplate.Turn("user", " Hi "),
                new ChatTemplate.Turn("assistant", "Hello."), new ChatTemplate.Turn("user", "Bye"));
        assertEquals("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
                + "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                + "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>"
                + "<|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|>"
                + "<|start_header_id|>assistant<|end_header_id|>\n\n", ChatTemplate.LLAMA3.render("Be brief.", turns));
        assertEquals("<|begin_of_text|>User: Hi<|eot_id|>Assistant: Hello.<|eot_id|>User: Bye<|eot_id|>Assistant: ",
                ChatTemplate.BITNET.render("", turns));
        assertEquals(" Hi \nHello.\n\nBye\n", ChatTemplate.PLAIN.render(null, turns));
    }

    @Test(expected = IllegalArgumentException.class)
    public void unknownRoleIsRefused() {
        new ChatTemplate.Turn("system", "x");
    }
}
