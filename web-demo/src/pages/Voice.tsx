export default function VoicePage(_: Record<string, unknown>) {
  return <h1>Voice</h1>;
}
