export default function KnowledgePage(_: Record<string, unknown>) {
  return <h1>Knowledge</h1>;
}
