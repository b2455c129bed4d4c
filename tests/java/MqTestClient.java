// The real Java RocketMQ client as a test driver: produce and consume exactly
// what a scenario describes, with message trace on, against Apache RocketMQ
// 4.9.x and 5.x brokers. Compiled by the Rust test support with `javac`
// against the distribution under test (tests/support/java.rs); one source for
// both client versions (5.x-only calls go through reflection).
//
//   produce --namesrv A --topic T --group G --plan FILE [--ledger FILE] [--no-trace]
//           [--trace-topic T]
//     Sends one message per plan line and prints one JSON line per message
//     (keys, msg_id, offset_msg_id, status, broker, queue, offset, time_ms).
//     Plan line: tab-separated name=value fields:
//       keys=K1 K2     the message keys (space-separated, as RocketMQ stores them)
//       tag=TagA       the tag
//       prop.N=V       a user property (SQL92 filters read these)
//       delay=L        delay level L
//       deliver_ms=D   5.x timer message, due D ms after the send
//       batch=B        consecutive lines with the same B are one batch send
//       tx=commit|rollback|unknown|check_commit|check_rollback
//                      a transactional message: resolved at once (commit,
//                      rollback), never (unknown: every check answers UNKNOW),
//                      or by the broker's check (check_*)
//       queue=BROKER/Q send to that queue (MessageQueueSelector)
//       ledger=no      send, but write no ledger line (the application forgot)
//       send=no        write the ledger line, never send (a lost send)
//     --stay-ms N keeps a transactional producer alive N ms after the last send
//     so the broker's checks reach it.
//
//   consume --namesrv A --topic T[,T2...] --group G [--expr "TagA || TagB" | --sql EXPR]
//           [--fail K1,K2] [--ack-no-ledger K1,K2] [--ledger FILE] [--no-trace]
//           [--broadcast] [--orderly] [--max-reconsume N] [--instance NAME]
//           [--trace-topic T] [--pop] [--fail-delay-level N]
//     Consumes until standard input closes, then shuts down cleanly (offsets
//     and trace flushed) and exits. One JSON line per delivery on stdout:
//     {"event":"deliver","key":..,"keys":[..],"msg_id":..,"reconsume":N,
//      "result":"success"|"fail"|"ack_no_ledger",...}; "ready" once started.
//     A key in --fail always fails (RECONSUME_LATER; SUSPEND for --orderly):
//     it walks %RETRY%group into %DLQ%group after --max-reconsume tries.
//     --fail-delay-level N sends a failed delivery back with delay level N
//     (setDelayLevelWhenNextConsume) instead of the broker's 3 + retries.
//     The first delivery of a key in --ack-no-ledger is acknowledged without a
//     ledger line (the classic consume-stage loss; once per key, so of two
//     messages sharing a key only one is lost).
//     --pop (5.x): POP consumption, the broker assigning queues and tracking
//     pops and acks; the group must be in POP mode (mqadmin setConsumeMode).
//     A failed POP message is retried through %RETRY%group_topic.

import java.io.BufferedReader;
import java.io.FileOutputStream;
import java.io.InputStreamReader;
import java.io.OutputStreamWriter;
import java.io.PrintStream;
import java.io.Writer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicLong;

import org.apache.rocketmq.client.consumer.DefaultMQPushConsumer;
import org.apache.rocketmq.client.consumer.MessageSelector;
import org.apache.rocketmq.client.consumer.listener.ConsumeConcurrentlyStatus;
import org.apache.rocketmq.client.consumer.listener.ConsumeOrderlyStatus;
import org.apache.rocketmq.client.consumer.listener.MessageListenerConcurrently;
import org.apache.rocketmq.client.consumer.listener.MessageListenerOrderly;
import org.apache.rocketmq.client.producer.DefaultMQProducer;
import org.apache.rocketmq.client.producer.LocalTransactionState;
import org.apache.rocketmq.client.producer.SendResult;
import org.apache.rocketmq.client.producer.TransactionListener;
import org.apache.rocketmq.client.producer.TransactionMQProducer;
import org.apache.rocketmq.common.consumer.ConsumeFromWhere;
import org.apache.rocketmq.common.message.Message;
import org.apache.rocketmq.common.message.MessageExt;
import org.apache.rocketmq.common.message.MessageQueue;

public final class MqTestClient {
    private static final PrintStream OUT = new PrintStream(System.out, true);
    /** The consumer's group, for its ledger lines. */
    private static String GROUP;

    public static void main(String[] args) throws Exception {
        if (args.length == 0) {
            usage("missing command");
        }
        Map<String, String> opts = parse(Arrays.copyOfRange(args, 1, args.length));
        switch (args[0]) {
            case "produce":
                produce(opts);
                break;
            case "consume":
                consume(opts);
                break;
            default:
                usage("unknown command " + args[0]);
        }
        // Client threads are non-daemon in some versions: leave explicitly.
        System.exit(0);
    }

    private static void usage(String why) {
        System.err.println("MqTestClient: " + why + " (see the header of MqTestClient.java)");
        System.exit(64);
    }

    private static Map<String, String> parse(String[] args) {
        Map<String, String> opts = new HashMap<>();
        for (int i = 0; i < args.length; i++) {
            String a = args[i];
            if (!a.startsWith("--")) {
                usage("unexpected argument " + a);
            }
            String name = a.substring(2);
            boolean flag = name.equals("no-trace") || name.equals("broadcast") || name.equals("orderly")
                || name.equals("pop");
            if (flag) {
                opts.put(name, "true");
            } else {
                if (i + 1 >= args.length) {
                    usage(a + " needs a value");
                }
                opts.put(name, args[++i]);
            }
        }
        return opts;
    }

    private static String need(Map<String, String> opts, String name) {
        String v = opts.get(name);
        if (v == null) {
            usage("--" + name + " is required");
        }
        return v;
    }

    // ---------------------------------------------------------------- produce

    /** One plan line. */
    private static final class Planned {
        final int index;
        final Map<String, String> fields = new LinkedHashMap<>();
        Planned(int index) {
            this.index = index;
        }
        String get(String name) {
            return fields.get(name);
        }
        List<String> keys() {
            String k = fields.get("keys");
            return k == null || k.isEmpty() ? new ArrayList<>() : Arrays.asList(k.trim().split(" +"));
        }
    }

    private static List<Planned> readPlan(String path) throws Exception {
        List<Planned> plan = new ArrayList<>();
        for (String line : Files.readAllLines(Paths.get(path), StandardCharsets.UTF_8)) {
            if (line.isEmpty() || line.startsWith("#")) {
                continue;
            }
            Planned p = new Planned(plan.size());
            for (String field : line.split("\t")) {
                int eq = field.indexOf('=');
                if (eq <= 0) {
                    usage("plan line " + (plan.size() + 1) + ": field without name=value: " + field);
                }
                p.fields.put(field.substring(0, eq), field.substring(eq + 1));
            }
            plan.add(p);
        }
        return plan;
    }

    private static Message toMessage(String topic, Planned p) throws Exception {
        String body = p.get("body") != null ? p.get("body") : ("body-" + p.index);
        Message m = new Message(topic, body.getBytes(StandardCharsets.UTF_8));
        if (p.get("tag") != null) {
            m.setTags(p.get("tag"));
        }
        List<String> keys = p.keys();
        if (!keys.isEmpty()) {
            m.setKeys(keys);
        }
        for (Map.Entry<String, String> e : p.fields.entrySet()) {
            if (e.getKey().startsWith("prop.")) {
                m.putUserProperty(e.getKey().substring(5), e.getValue());
            }
        }
        if (p.get("delay") != null) {
            m.setDelayTimeLevel(Integer.parseInt(p.get("delay")));
        }
        if (p.get("deliver_ms") != null) {
            // 5.x only: Message.setDeliverTimeMs(long). Reflection keeps one
            // source compiling against the 4.9 client too.
            long at = System.currentTimeMillis() + Long.parseLong(p.get("deliver_ms"));
            try {
                Message.class.getMethod("setDeliverTimeMs", long.class).invoke(m, at);
            } catch (NoSuchMethodException e) {
                throw new IllegalStateException("deliver_ms needs a 5.x client");
            }
        }
        return m;
    }

    /** Transaction outcomes by message key set, read by the listener. */
    private static final Map<String, String> TX_OUTCOME = new ConcurrentHashMap<>();

    /**
     * The client's trace dispatcher drops a record when its buffers are full
     * ("buffer full", counted in discardCount), and under load it does. A
     * scenario's truth must not depend on a dropped record: wait while a
     * buffer is over half full, and report any drop at exit (the test then
     * fails, naming it).
     */
    private static final class TracePacer {
        private final Object dispatcher;
        private final List<ArrayBlockingQueue<?>> queues = new ArrayList<>();
        private final AtomicLong discarded;
        private final java.util.concurrent.ThreadPoolExecutor executor;

        private TracePacer(Object dispatcher) throws Exception {
            this.dispatcher = dispatcher;
            Class<?> c = dispatcher.getClass();
            java.lang.reflect.Field e = c.getDeclaredField("traceExecutor");
            e.setAccessible(true);
            executor = (java.util.concurrent.ThreadPoolExecutor) e.get(dispatcher);
            for (String name : new String[] {"traceContextQueue", "appenderQueue"}) {
                java.lang.reflect.Field f = c.getDeclaredField(name);
                f.setAccessible(true);
                queues.add((ArrayBlockingQueue<?>) f.get(dispatcher));
            }
            java.lang.reflect.Field d = c.getDeclaredField("discardCount");
            d.setAccessible(true);
            discarded = (AtomicLong) d.get(dispatcher);
            // Trace sends are asynchronous with a fixed 5 s timeout; on a
            // loaded machine one can time out, and the record is dropped:
            // let the trace producer retry (default 2).
            traceProducer = c.getMethod("getTraceProducer").invoke(dispatcher);
            traceProducer.getClass().getMethod("setRetryTimesWhenSendAsyncFailed", int.class)
                .invoke(traceProducer, 10);
            // 4.9 batches records per trace topic in TraceDataSegments that
            // only its worker thread may touch: flush() from another thread
            // copies and clears a segment while the worker appends to it, and
            // the records appended in between are lost, uncounted (most of
            // them while a consumer races through a backlog). So on 4.9 the
            // pacer never calls flush(); it keeps batches small by the size
            // threshold the worker itself applies (the trace producer's
            // maximum message size less 10,000: about 100 records, well under
            // the broker's 32 KiB limit on the batch's KEYS property), and
            // drains by waiting for the worker's half-second time threshold.
            java.lang.reflect.Field segments = null;
            try {
                segments = c.getDeclaredField("taskQueueByTopic");
                segments.setAccessible(true);
                traceProducer.getClass().getMethod("setMaxMessageSize", int.class)
                    .invoke(traceProducer, 40_000);
            } catch (NoSuchFieldException absent) {
                // 5.x: one worker drains a thread-safe queue; flush() is safe.
            }
            this.segments = segments == null ? null : (Map<?, ?>) segments.get(dispatcher);
        }

        /** 4.9's batches by trace topic (see the constructor), null on 5.x. */
        private final Map<?, ?> segments;

        /** Records batched in 4.9's segments, not yet handed to the executor. */
        private int batched() throws Exception {
            if (segments == null) {
                return 0;
            }
            int n = 0;
            List<Object> all;
            try {
                all = new ArrayList<>(segments.values());
            } catch (java.util.ConcurrentModificationException e) {
                return 1; // the worker is adding a topic: not drained
            }
            for (Object segment : all) {
                java.lang.reflect.Field list = segment.getClass().getDeclaredField("traceTransferBeanList");
                list.setAccessible(true);
                n += ((List<?>) list.get(segment)).size();
            }
            return n;
        }

        private void flush() throws Exception {
            if (segments == null) {
                dispatcher.getClass().getMethod("flush").invoke(dispatcher);
            }
        }

        private final Object traceProducer;

        /**
         * Trace sends the trace producer has not had answered yet: queued or
         * running in its async sender, or awaiting the broker's response. The
         * dispatcher's executor is idle as soon as it handed a batch over, so
         * draining it alone shuts down with that batch still in flight.
         */
        int inFlight() throws Exception {
            Object impl = traceProducer.getClass().getMethod("getDefaultMQProducerImpl").invoke(traceProducer);
            int n = 0;
            Object sender = impl.getClass().getMethod("getAsyncSenderExecutor").invoke(impl);
            if (sender instanceof java.util.concurrent.ThreadPoolExecutor) {
                java.util.concurrent.ThreadPoolExecutor pool = (java.util.concurrent.ThreadPoolExecutor) sender;
                n += pool.getActiveCount() + pool.getQueue().size();
            }
            Object factory = impl.getClass().getMethod("getMqClientFactory").invoke(impl);
            if (factory != null) {
                Object api = factory.getClass().getMethod("getMQClientAPIImpl").invoke(factory);
                Object remoting = api.getClass().getMethod("getRemotingClient").invoke(api);
                Class<?> k = remoting.getClass();
                while (k != null && !k.getSimpleName().equals("NettyRemotingAbstract")) {
                    k = k.getSuperclass();
                }
                if (k != null) {
                    java.lang.reflect.Field t = k.getDeclaredField("responseTable");
                    t.setAccessible(true);
                    n += ((Map<?, ?>) t.get(remoting)).size();
                }
            }
            return n;
        }

        /** The pacer of a traced producer or consumer, or null without trace. */
        static TracePacer of(Object client) throws Exception {
            Object dispatcher = client.getClass().getMethod("getTraceDispatcher").invoke(client);
            return dispatcher == null ? null : new TracePacer(dispatcher);
        }

        private int paced;

        void pace() {
            // A 4.9 dispatcher batches every record of half a second into one
            // trace message whose KEYS property lists them all; past 32 KiB
            // of properties the broker refuses it and the whole batch is
            // lost, uncounted. Flushing every 100 records keeps batches small.
            if (++paced % 100 == 0) {
                try {
                    flush();
                } catch (Exception e) {
                    throw new IllegalStateException("trace flush", e);
                }
            }
            for (ArrayBlockingQueue<?> q : queues) {
                while (q.size() > q.remainingCapacity()) {
                    try {
                        Thread.sleep(2);
                    } catch (InterruptedException e) {
                        Thread.currentThread().interrupt();
                        return;
                    }
                }
            }
        }

        long discarded() {
            return discarded.get();
        }

        /**
         * Send everything batched and wait until it is sent: 4.9's shutdown
         * stops the trace producer without waiting for sends in flight, and
         * its last batch is lost.
         */
        void drain(long limitMs) throws Exception {
            for (int round = 0; round < 2; round++) {
                flush();
                long end = System.currentTimeMillis() + limitMs / 2;
                int idle = 0;
                while (idle < 4 && System.currentTimeMillis() < end) {
                    boolean empty = executor.getActiveCount() == 0 && executor.getQueue().isEmpty()
                        && inFlight() == 0 && batched() == 0;
                    for (ArrayBlockingQueue<?> q : queues) {
                        empty &= q.isEmpty();
                    }
                    idle = empty ? idle + 1 : 0;
                    Thread.sleep(200);
                }
            }
        }
    }

    /** Exit 3, naming the drop, when the trace dispatcher dropped records. */
    private static void failOnTraceDrops(TracePacer pacer, String who) {
        if (pacer != null && pacer.discarded() > 0) {
            System.err.println("MqTestClient: the " + who + "'s trace dispatcher dropped "
                + pacer.discarded() + " trace records (buffer full)");
            System.exit(3);
        }
    }

    private static volatile TracePacer CONSUMER_PACER;

    private static void produce(Map<String, String> opts) throws Exception {
        String namesrv = need(opts, "namesrv");
        String topic = need(opts, "topic");
        String group = need(opts, "group");
        boolean trace = !opts.containsKey("no-trace");
        String traceTopic = opts.get("trace-topic");
        List<Planned> plan = readPlan(need(opts, "plan"));
        Writer ledger = opts.containsKey("ledger")
            ? new OutputStreamWriter(new FileOutputStream(opts.get("ledger"), true), StandardCharsets.UTF_8)
            : null;
        long stayMs = Long.parseLong(opts.getOrDefault("stay-ms", "0"));

        boolean anyTx = false;
        for (Planned p : plan) {
            anyTx |= p.get("tx") != null;
        }
        DefaultMQProducer producer;
        if (anyTx) {
            TransactionMQProducer tx = new TransactionMQProducer(null, group, null, trace, traceTopic);
            tx.setTransactionListener(new TransactionListener() {
                @Override
                public LocalTransactionState executeLocalTransaction(Message msg, Object arg) {
                    String outcome = (String) arg;
                    if ("commit".equals(outcome)) {
                        return LocalTransactionState.COMMIT_MESSAGE;
                    }
                    if ("rollback".equals(outcome)) {
                        return LocalTransactionState.ROLLBACK_MESSAGE;
                    }
                    return LocalTransactionState.UNKNOW;
                }

                @Override
                public LocalTransactionState checkLocalTransaction(MessageExt msg) {
                    String outcome = TX_OUTCOME.get(msg.getKeys() == null ? "" : msg.getKeys());
                    if ("check_commit".equals(outcome)) {
                        return LocalTransactionState.COMMIT_MESSAGE;
                    }
                    if ("check_rollback".equals(outcome)) {
                        return LocalTransactionState.ROLLBACK_MESSAGE;
                    }
                    return LocalTransactionState.UNKNOW;
                }
            });
            producer = tx;
        } else {
            producer = new DefaultMQProducer(group, trace, traceTopic);
        }
        producer.setNamesrvAddr(namesrv);
        producer.setInstanceName("mqtest-" + ProcessHandle.current().pid());
        producer.setPollNameServerInterval(1000);
        producer.setSendMsgTimeout(10000);
        producer.setRetryTimesWhenSendFailed(0);
        producer.start();
        TracePacer pacer = TracePacer.of(producer);

        int i = 0;
        while (i < plan.size()) {
            if (pacer != null) {
                pacer.pace();
            }
            Planned p = plan.get(i);
            if ("no".equals(p.get("send"))) {
                emit(ledger, p, topic, null, null, "NOT_SENT", null, -1, -1, null);
                i++;
                continue;
            }
            if (p.get("batch") != null) {
                List<Planned> members = new ArrayList<>();
                while (i < plan.size() && p.get("batch").equals(plan.get(i).get("batch"))) {
                    members.add(plan.get(i++));
                }
                sendBatch(producer, topic, members, ledger);
                continue;
            }
            sendOne(producer, topic, p, ledger);
            i++;
        }
        if (ledger != null) {
            ledger.close();
        }
        if (stayMs > 0) {
            Thread.sleep(stayMs);
        }
        if (pacer != null) {
            pacer.drain(30_000);
        }
        producer.shutdown();
        failOnTraceDrops(pacer, "producer");
    }

    private static void sendOne(DefaultMQProducer producer, String topic, Planned p, Writer ledger) throws Exception {
        Message m = toMessage(topic, p);
        try {
            SendResult r;
            if (p.get("tx") != null) {
                TX_OUTCOME.put(m.getKeys() == null ? "" : m.getKeys(), p.get("tx"));
                r = ((TransactionMQProducer) producer).sendMessageInTransaction(m, p.get("tx"));
            } else if (p.get("queue") != null) {
                MessageQueue q = selectQueue(producer, topic, p.get("queue"));
                r = producer.send(m, q);
            } else {
                r = producer.send(m);
            }
            String status = r.getSendStatus().name();
            String txState = null;
            if (r instanceof org.apache.rocketmq.client.producer.TransactionSendResult) {
                txState = ((org.apache.rocketmq.client.producer.TransactionSendResult) r)
                    .getLocalTransactionState().name();
            }
            emit(ledger, p, topic, r.getMsgId(), r.getOffsetMsgId(), status,
                r.getMessageQueue().getBrokerName(), r.getMessageQueue().getQueueId(), r.getQueueOffset(), txState);
        } catch (Exception e) {
            emitError(ledger, p, topic, e);
        }
    }

    private static void sendBatch(DefaultMQProducer producer, String topic, List<Planned> members, Writer ledger)
        throws Exception {
        List<Message> batch = new ArrayList<>();
        for (Planned p : members) {
            batch.add(toMessage(topic, p));
        }
        try {
            SendResult r = members.get(0).get("queue") != null
                ? producer.send(batch, selectQueue(producer, topic, members.get(0).get("queue")))
                : producer.send(batch);
            String[] ids = r.getMsgId().split(",");
            String[] offsetIds = r.getOffsetMsgId() == null ? new String[0] : r.getOffsetMsgId().split(",");
            for (int j = 0; j < members.size(); j++) {
                emit(ledger, members.get(j), topic, j < ids.length ? ids[j] : null,
                    j < offsetIds.length ? offsetIds[j] : null, r.getSendStatus().name(),
                    r.getMessageQueue().getBrokerName(), r.getMessageQueue().getQueueId(), r.getQueueOffset() + j,
                    null);
            }
        } catch (Exception e) {
            for (Planned p : members) {
                emitError(ledger, p, topic, e);
            }
        }
    }

    private static MessageQueue selectQueue(DefaultMQProducer producer, String topic, String spec) throws Exception {
        String[] parts = spec.split("/");
        for (MessageQueue q : producer.fetchPublishMessageQueues(topic)) {
            if (q.getBrokerName().equals(parts[0]) && q.getQueueId() == Integer.parseInt(parts[1])) {
                return q;
            }
        }
        throw new IllegalStateException("no writable queue " + spec + " for " + topic);
    }

    private static void emitError(Writer ledger, Planned p, String topic, Exception e) throws Exception {
        emit(ledger, p, topic, null, null, "FAILED", null, -1, -1, null, e.toString());
    }

    private static void emit(Writer ledger, Planned p, String topic, String msgId, String offsetMsgId, String status,
        String broker, int queueId, long queueOffset, String txState) throws Exception {
        emit(ledger, p, topic, msgId, offsetMsgId, status, broker, queueId, queueOffset, txState, null);
    }

    private static void emit(Writer ledger, Planned p, String topic, String msgId, String offsetMsgId, String status,
        String broker, int queueId, long queueOffset, String txState, String error) throws Exception {
        long now = System.currentTimeMillis();
        Json j = new Json()
            .num("index", p.index)
            .str("key", p.keys().isEmpty() ? null : p.keys().get(0))
            .list("keys", p.keys())
            .str("topic", topic)
            .str("tag", p.get("tag"))
            .str("msg_id", msgId)
            .str("offset_msg_id", offsetMsgId)
            .str("status", status)
            .str("broker", broker)
            .num("queue_id", queueId)
            .num("queue_offset", queueOffset)
            .str("tx", p.get("tx"))
            .str("transaction", txState)
            .str("kind", p.get("tx") != null ? "transaction"
                : (p.get("delay") != null || p.get("deliver_ms") != null) ? "delay" : "normal")
            .bool("batch", p.get("batch") != null)
            .num("time_ms", now)
            .str("error", error);
        OUT.println(j);
        if (ledger != null && !"no".equals(p.get("ledger"))) {
            ledger.write(j + "\n");
            ledger.flush();
        }
    }

    // ---------------------------------------------------------------- consume

    private static Set<String> keySet(String list) {
        Set<String> s = new HashSet<>();
        if (list != null) {
            for (String k : list.split(",")) {
                if (!k.isEmpty()) {
                    s.add(k);
                }
            }
        }
        return s;
    }

    private static void consume(Map<String, String> opts) throws Exception {
        String namesrv = need(opts, "namesrv");
        String topic = need(opts, "topic");
        String group = need(opts, "group");
        GROUP = group;
        boolean trace = !opts.containsKey("no-trace");
        Set<String> fail = keySet(opts.get("fail"));
        Set<String> noLedger = java.util.Collections.synchronizedSet(keySet(opts.get("ack-no-ledger")));
        Writer ledger = opts.containsKey("ledger")
            ? new OutputStreamWriter(new FileOutputStream(opts.get("ledger"), true), StandardCharsets.UTF_8)
            : null;

        DefaultMQPushConsumer consumer = new DefaultMQPushConsumer(group, trace, opts.get("trace-topic"));
        consumer.setNamesrvAddr(namesrv);
        consumer.setInstanceName(opts.getOrDefault("instance", "mqtest-" + ProcessHandle.current().pid()));
        consumer.setPollNameServerInterval(1000);
        consumer.setConsumeFromWhere(ConsumeFromWhere.CONSUME_FROM_FIRST_OFFSET);
        consumer.setPersistConsumerOffsetInterval(1000);
        consumer.setMaxReconsumeTimes(Integer.parseInt(opts.getOrDefault("max-reconsume", "2")));
        consumer.setSuspendCurrentQueueTimeMillis(500);
        if (opts.containsKey("broadcast")) {
            setBroadcasting(consumer);
        }
        if (opts.containsKey("pop")) {
            // 5.x only: with client rebalance off the consumer asks the broker
            // for its assignment, and a group in POP mode pops.
            consumer.getClass().getMethod("setClientRebalance", boolean.class).invoke(consumer, false);
            consumer.getClass().getMethod("setPopInvisibleTime", long.class).invoke(consumer, 20_000L);
        }
        // Several topics (comma-separated), one expression for all.
        for (String t : topic.split(",")) {
            if (opts.containsKey("sql")) {
                consumer.subscribe(t, MessageSelector.bySql(opts.get("sql")));
            } else {
                consumer.subscribe(t, opts.getOrDefault("expr", "*"));
            }
        }

        if (opts.containsKey("orderly")) {
            consumer.registerMessageListener((MessageListenerOrderly) (msgs, ctx) -> {
                for (MessageExt m : msgs) {
                    if (!handle(m, fail, noLedger, ledger)) {
                        return ConsumeOrderlyStatus.SUSPEND_CURRENT_QUEUE_A_MOMENT;
                    }
                }
                return ConsumeOrderlyStatus.SUCCESS;
            });
        } else {
            consumer.setConsumeMessageBatchMaxSize(1);
            int failDelayLevel = Integer.parseInt(opts.getOrDefault("fail-delay-level", "0"));
            consumer.registerMessageListener((MessageListenerConcurrently) (msgs, ctx) -> {
                for (MessageExt m : msgs) {
                    if (!handle(m, fail, noLedger, ledger)) {
                        ctx.setDelayLevelWhenNextConsume(failDelayLevel);
                        return ConsumeConcurrentlyStatus.RECONSUME_LATER;
                    }
                }
                return ConsumeConcurrentlyStatus.CONSUME_SUCCESS;
            });
        }
        consumer.start();
        CONSUMER_PACER = TracePacer.of(consumer);
        OUT.println(new Json().str("event", "ready").str("group", group));

        // Run until the test closes our standard input.
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        while (in.readLine() != null) {
            // Lines are ignored: closing stdin is the only command.
        }
        if (CONSUMER_PACER != null) {
            // Stop pulling, let deliveries in flight finish, then send
            // their trace before the dispatcher is shut down.
            consumer.suspend();
            Thread.sleep(500);
            // Bounded: an orderly consumer retrying a failing message in
            // place keeps tracing while suspended.
            CONSUMER_PACER.drain(8_000);
        }
        consumer.shutdown();
        if (ledger != null) {
            synchronized (ledger) {
                ledger.close();
            }
        }
        failOnTraceDrops(CONSUMER_PACER, "consumer");
        OUT.println(new Json().str("event", "stopped"));
    }

    /** MessageModel moved packages in 5.x: find it by name. */
    @SuppressWarnings({"unchecked", "rawtypes"})
    private static void setBroadcasting(DefaultMQPushConsumer consumer) throws Exception {
        Class<?> model;
        try {
            model = Class.forName("org.apache.rocketmq.remoting.protocol.heartbeat.MessageModel");
        } catch (ClassNotFoundException e) {
            model = Class.forName("org.apache.rocketmq.common.protocol.heartbeat.MessageModel");
        }
        Object broadcasting = Enum.valueOf((Class) model, "BROADCASTING");
        DefaultMQPushConsumer.class.getMethod("setMessageModel", model).invoke(consumer, broadcasting);
    }

    /** Returns whether the delivery succeeded. */
    private static boolean handle(MessageExt m, Set<String> fail, Set<String> noLedger, Writer ledger) {
        TracePacer pacer = CONSUMER_PACER;
        if (pacer != null) {
            pacer.pace();
        }
        List<String> keys = m.getKeys() == null || m.getKeys().isEmpty()
            ? new ArrayList<>()
            : Arrays.asList(m.getKeys().trim().split(" +"));
        String key = keys.isEmpty() ? null : keys.get(0);
        boolean failed = key != null && fail.contains(key);
        // Once per key: of two messages sharing a key, only the first is lost.
        boolean silent = key != null && !failed && noLedger.remove(key);
        String result = failed ? "fail" : silent ? "ack_no_ledger" : "success";
        long now = System.currentTimeMillis();
        Json j = new Json()
            .str("event", "deliver")
            .str("key", key)
            .list("keys", keys)
            .str("msg_id", m.getMsgId())
            .str("offset_msg_id", offsetMsgId(m))
            .str("topic", m.getTopic())
            .str("tag", m.getTags())
            .str("broker", m.getBrokerName())
            .num("queue_id", m.getQueueId())
            .num("queue_offset", m.getQueueOffset())
            .num("reconsume", m.getReconsumeTimes())
            .str("result", result)
            .num("time_ms", now);
        OUT.println(j);
        if (!failed && !silent && ledger != null) {
            Json line = new Json()
                .str("key", key)
                .list("keys", keys)
                .str("msg_id", m.getMsgId())
                .str("topic", m.getTopic())
                .str("group", GROUP)
                .num("time_ms", now);
            try {
                synchronized (ledger) {
                    ledger.write(line + "\n");
                    ledger.flush();
                }
            } catch (Exception e) {
                throw new IllegalStateException("consumer ledger write failed", e);
            }
        }
        return !failed;
    }

    private static String offsetMsgId(MessageExt m) {
        try {
            return (String) m.getClass().getMethod("getOffsetMsgId").invoke(m);
        } catch (Exception e) {
            return null;
        }
    }

    // ------------------------------------------------------------------- JSON

    /** A one-line JSON object writer (no dependency beyond the client). */
    private static final class Json {
        private final StringBuilder sb = new StringBuilder("{");

        private Json name(String n) {
            if (sb.length() > 1) {
                sb.append(',');
            }
            quote(n);
            sb.append(':');
            return this;
        }

        Json str(String n, String v) {
            name(n);
            if (v == null) {
                sb.append("null");
            } else {
                quote(v);
            }
            return this;
        }

        Json bool(String n, boolean v) {
            name(n);
            sb.append(v);
            return this;
        }

        Json num(String n, long v) {
            name(n);
            sb.append(v);
            return this;
        }

        Json list(String n, List<String> vs) {
            name(n);
            sb.append('[');
            for (int i = 0; i < vs.size(); i++) {
                if (i > 0) {
                    sb.append(',');
                }
                quote(vs.get(i));
            }
            sb.append(']');
            return this;
        }

        private void quote(String s) {
            sb.append('"');
            for (char c : s.toCharArray()) {
                switch (c) {
                    case '"': sb.append("\\\""); break;
                    case '\\': sb.append("\\\\"); break;
                    case '\n': sb.append("\\n"); break;
                    case '\r': sb.append("\\r"); break;
                    case '\t': sb.append("\\t"); break;
                    default:
                        if (c < 0x20) {
                            sb.append(String.format("\\u%04x", (int) c));
                        } else {
                            sb.append(c);
                        }
                }
            }
            sb.append('"');
        }

        @Override
        public String toString() {
            return sb.toString() + "}";
        }
    }
}
