// A teammate's program in Java (11 or newer, no libraries): it sends one
// plain-text message and one JSON request to the word-count service,
// one line each over TCP, and prints each reply line.
//
//   java docs/examples/TeammateClient.java 3001 "the text to count" [host]
//
// A service on another computer needs its token: set SPIKE_TOKEN.
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.OutputStreamWriter;
import java.io.PrintWriter;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.nio.charset.StandardCharsets;

public class TeammateClient {
    public static void main(String[] args) {
        int port = 3001;
        try {
            port = args.length > 0 ? Integer.parseInt(args[0]) : port;
        } catch (NumberFormatException e) {
            System.err.println("The port must be a number, not " + args[0]);
            System.exit(2);
        }
        String text = args.length > 1 ? args[1] : "A message from CS361";
        String host = args.length > 2 ? args[2] : "127.0.0.1";
        String token = System.getenv("SPIKE_TOKEN");
        String where = host + ":" + port;

        try (Socket socket = new Socket()) {
            socket.connect(new InetSocketAddress(host, port), 5000);
            socket.setSoTimeout(5000); // wait at most 5 s for a reply
            // UTF-8 both ways; `true` sends each println at once.
            PrintWriter out = new PrintWriter(new OutputStreamWriter(
                socket.getOutputStream(), StandardCharsets.UTF_8), true);
            BufferedReader in = new BufferedReader(new InputStreamReader(
                socket.getInputStream(), StandardCharsets.UTF_8));

            // 0. The token, when there is one, goes first (not shown).
            if (token != null && !token.isEmpty()) {
                out.println("{\"op\": \"auth\", \"token\": " + jsonString(token) + "}");
                String reply = in.readLine();
                if (reply == null || !reply.contains("\"ok\":true")) {
                    System.err.println("The service refused the token: " + reply);
                    System.exit(1);
                }
            }

            // 1. A plain line of text: the reply is the same text.
            send(out, "A message from CS361");
            receive(in);

            // 2. A line that starts with "{" is a JSON request.
            send(out, "{\"op\": \"word_count\", \"id\": 1, \"text\": "
                    + jsonString(text) + ", \"top\": 3}");
            String reply = receive(in);
            // A JSON library (Jackson, Gson, org.json) would parse the
            // reply; here its "ok" is enough to set the exit status.
            if (!reply.contains("\"ok\":true")) {
                System.exit(1);
            }
        } catch (IOException e) {
            System.err.println("Could not use the service at " + where
                    + ": " + e.getMessage());
            System.exit(1);
        }
    }

    /** One message is one line: println ends it. */
    static void send(PrintWriter out, String line) {
        out.println(line);
        System.out.println("Sent: " + line);
    }

    /** The next reply line, without its line ending. */
    static String receive(BufferedReader in) throws IOException {
        String line = in.readLine();
        if (line == null) {
            throw new IOException("the service closed the connection");
        }
        System.out.println("Received: " + line);
        return line;
    }

    /** text as a JSON string: quotes, backslashes, control characters. */
    static String jsonString(String text) {
        StringBuilder json = new StringBuilder("\"");
        for (char c : text.toCharArray()) {
            if (c == '"' || c == '\\') {
                json.append('\\').append(c);
            } else if (c < 0x20) {
                json.append(String.format("\\u%04x", (int) c));
            } else {
                json.append(c);
            }
        }
        return json.append('"').toString();
    }
}
